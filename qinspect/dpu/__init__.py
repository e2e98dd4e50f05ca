"""The DPU int8 emulator: fixed point, calibration, graph rewrites, integer operators. numpy only."""
