"""The inspector window: the only place that imports PySide6 and pyqtgraph.

Modules, one job each:

- ``app``: QApplication set-up and ``main`` (``qinspect gui [FILE]``, ``qinspect FILE``, ``qinspect``).
- ``main_window``: menus, the layer tree dock, the view tabs, status bar, drag and drop, settings.
- ``document``: what is open (a capture or a model), plain Python; ``session``: the model-wide analysis
  state and its background jobs; ``emulation``: the bridge to ``qinspect.dpu`` / ``analysis`` / ``report``.
- ``graph_model``: the ``QStandardItemModel`` over the ``ModelGraph`` (the tree) and its search proxy.
- ``worker``: the one way to run work off the UI thread (a ``Channel``: latest request wins, results and
  errors as signals); ``compute_process``: the helper process the layer panel's worker waits on.
- ``errors``: the one error hub (UI-thread exceptions via ``sys.excepthook`` and worker failures).
- ``layer_panel`` + ``layer_stats``: the selected layer's plots, what-if, and the numbers behind them.
- ``propagation_view``, ``compare_view`` + ``compare_job``, ``dump_view``, ``findings_view``: the
  whole-model views; ``capture_dialog`` + ``capture_job``: capturing a model from the GUI (TensorFlow in a
  helper process); ``draw_steps``: drawing a view one plot per event-loop turn; ``empty_state``: the start page;
  ``settings``: what persists (``QINSPECT_SETTINGS`` points tests at their own file).
- ``figures`` (owned by the report package's authors): report figures drawn to PNG.
"""
