"""Error statistics between a float reference and a test (quantized / emulated) tensor.

:class:`ErrorStats` keeps only raw sums, so statistics computed batch by batch (or on several
machines) merge exactly: every derived figure (MSE, SQNR, cosine, saturation, code use) is computed
from the sums at the end, never averaged from per-batch figures.

Conventions (they are repeated in :meth:`ErrorStats.to_dict`, which says how each number is computed):

- ``d = test - ref`` element-wise; every sum runs over all elements of all samples seen (batch,
  spatial positions and channels alike).
- Sums are float64. Each chunk of at most ``_CHUNK`` elements is summed with ``np.dot`` (blocked
  summation in float64), so the relative rounding error of a sum stays near 1e-16 * log(n). The two
  float64 chunk buffers (reference and difference) are reused across chunks.
  ``sum test^2`` and ``sum ref*test`` are derived from ``ref.ref``, ``ref.d`` and ``d.d`` (``test =
  ref + d``), which is exact algebra and leaves float64 rounding only.
- ``sqnr_db = 10 * log10(sum ref^2 / sum d^2)``: the signal is the reference's energy, not its variance.
  It is ``+inf`` when ``d`` is zero everywhere (a bit-exact result), ``-inf`` when the reference is zero
  everywhere but ``d`` is not, and ``nan`` when nothing was seen.
- Saturation counts come from the int8 codes when they are given: ``q == qmin`` and ``q == qmax``.
  A value that lands on an end code because it rounds there is counted too: on the codes alone the two
  cannot be told apart. The *clip* counts are the float-side view: reference values strictly beyond the
  representable range ``[clip_lo, clip_hi]`` (see :func:`representable_range`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.dpu._blas import single_threaded_blas

# Elements per chunk in update(): bounds the float64 temporaries to ~8 MB each.
_CHUNK = 1 << 20

N_CODES = 256
CODE_OFFSET = 128  # histogram bin of code q is q + 128 (codes -128 .. 127)


def representable_range(position: int, qmin: int = -128, qmax: int = 127) -> tuple[float, float]:
    """The float range ``[qmin * 2^-p, qmax * 2^-p]`` that codes of position ``p`` represent."""
    scale = 2.0 ** (-position)
    return qmin * scale, qmax * scale


def code_histogram(q: np.ndarray) -> np.ndarray:
    """Counts of each int8 code: an int64 array of 256 bins, bin ``i`` holding code ``i - 128``.

    Accepts int8 arrays (fast path) or any integer array whose values lie in [-128, 127].
    """
    q = np.asarray(q)
    if q.dtype == np.int8:
        return _byte_histogram(np.ascontiguousarray(q).reshape(-1).view(np.uint8))
    if q.size and (q.min() < -CODE_OFFSET or q.max() >= N_CODES - CODE_OFFSET):
        raise ValueError("codes outside [-128, 127]")
    idx = q.reshape(-1).astype(np.int64) + CODE_OFFSET
    return np.bincount(idx, minlength=N_CODES).astype(np.int64)


# Below this many bytes a plain bincount is cheaper than the pair histogram's 65536 bins.
_PAIR_MIN = 1 << 18
_PAIR_CHUNK = 1 << 18  # byte pairs per bincount call


def _byte_histogram(u: np.ndarray) -> np.ndarray:
    """Histogram of int8 codes given as their uint8 bytes ``u`` (contiguous, 1-D), in code bins.

    Bytes are counted two at a time: the array viewed as uint16 has half as many elements for
    ``bincount`` (which converts its input to intp); pair ``b0 + 256 b1`` adds one to byte b0 and one to
    byte b1, so the byte counts are the row sums plus the column sums of the 256 x 256 pair counts.
    Byte u is code u (u < 128) or u - 256: rolling the byte counts by 128 puts code q in bin q + 128.
    """
    n = u.size
    if n < _PAIR_MIN:
        counts = np.bincount(u, minlength=N_CODES)
    else:
        even = n - (n & 1)
        p16 = u[:even].view(np.uint16)
        pairs = np.zeros(1 << 16, dtype=np.int64)
        # chunks keep bincount's intp copy of its input in cache (about twice as fast as one call)
        for s in range(0, p16.size, _PAIR_CHUNK):
            pairs += np.bincount(p16[s : s + _PAIR_CHUNK], minlength=1 << 16)
        pairs = pairs.reshape(N_CODES, N_CODES)
        counts = pairs.sum(axis=0) + pairs.sum(axis=1)
        if n & 1:
            counts[u[-1]] += 1
    return np.roll(counts.astype(np.int64), CODE_OFFSET)


@dataclass
class ErrorStats:
    """Mergeable raw sums of the error between a reference tensor and a test tensor.

    Use :meth:`update` once per batch, :meth:`merge` to combine accumulators, and the properties for
    the derived figures.
    """

    n: int = 0
    sum_d: float = 0.0
    sum_d2: float = 0.0
    sum_ref2: float = 0.0
    sum_test2: float = 0.0
    sum_ref_test: float = 0.0
    max_abs_d: float = 0.0
    ref_min: float = math.inf
    ref_max: float = -math.inf
    # Code statistics (only when codes were given to update()).
    n_codes: int = 0
    q_lo_count: int = 0
    q_hi_count: int = 0
    qmin: int = -128
    qmax: int = 127
    hist: np.ndarray = field(default_factory=lambda: np.zeros(N_CODES, dtype=np.int64))
    # Float-side clip counts (only when clip_lo / clip_hi were given).
    n_clip_checked: int = 0
    clip_lo_count: int = 0
    clip_hi_count: int = 0

    # ------------------------------------------------------------------ accumulate
    def update(
        self,
        ref: np.ndarray,
        test: np.ndarray,
        q: np.ndarray | None = None,
        qmin: int = -128,
        qmax: int = 127,
        clip_lo: float | None = None,
        clip_hi: float | None = None,
    ) -> ErrorStats:
        """Add one batch. ``ref`` and ``test`` must have the same number of elements.

        ``q``: the int8 codes behind ``test`` (any shape, any integer dtype in [-128, 127]), for
        saturation and code-use figures. ``clip_lo`` / ``clip_hi``: the representable float range;
        reference values strictly outside it are counted as clipped. Returns ``self``.
        """
        ref = np.asarray(ref)
        test = np.asarray(test)
        if ref.size != test.size:
            raise ValueError(f"ref has {ref.size} elements, test has {test.size}")
        if q is not None:
            if self.n_codes and (qmin, qmax) != (self.qmin, self.qmax):
                raise ValueError(f"code range [{qmin}, {qmax}] differs from earlier [{self.qmin}, {self.qmax}]")
            self.qmin, self.qmax = int(qmin), int(qmax)
        r_all = ref.reshape(-1)
        t_all = test.reshape(-1)
        size = int(r_all.size)
        # Two float64 buffers reused across chunks (no fresh temporaries per chunk).
        buf = np.empty((2, min(size, _CHUNK)), dtype=np.float64)
        with single_threaded_blas():  # see _chunk_sums
            self._chunk_sums(r_all, t_all, buf, clip_lo, clip_hi)
        self.n += size
        if q is not None:
            qa = np.asarray(q)
            h = code_histogram(qa)
            self.hist += h
            self.n_codes += int(qa.size)
            # the end codes' counts are histogram bins (no extra pass) when they are int8 codes
            for lim, attr in ((qmin, "q_lo_count"), (qmax, "q_hi_count")):
                if -CODE_OFFSET <= lim < N_CODES - CODE_OFFSET:
                    cnt = int(h[lim + CODE_OFFSET])
                else:
                    cnt = int(np.count_nonzero(qa == lim))
                setattr(self, attr, getattr(self, attr) + cnt)
        if clip_lo is not None or clip_hi is not None:
            self.n_clip_checked += size
        return self

    def _chunk_sums(self, r_all: np.ndarray, t_all: np.ndarray, buf: np.ndarray, clip_lo: float | None,
                    clip_hi: float | None) -> None:
        """The float sums of :meth:`update`, chunk by chunk. The dot products are BLAS calls of one
        thread each (the caller's context): at these sizes more threads gain nothing, and on a loaded
        machine OpenBLAS's waiting threads made them up to ten times slower."""
        for start in range(0, r_all.size, _CHUNK):
            rc, tc = r_all[start : start + _CHUNK], t_all[start : start + _CHUNK]
            r, d = buf[0, : rc.size], buf[1, : rc.size]
            r[...] = rc
            d[...] = tc
            d -= r  # d = test - ref in float64 (exact for float32 inputs)
            rr = float(np.dot(r, r))
            rd = float(np.dot(r, d))
            dd = float(np.dot(d, d))
            self.sum_d += float(d.sum())
            self.sum_d2 += dd
            self.sum_ref2 += rr
            # test = ref + d: the two sums below follow from the three dot products above.
            self.sum_ref_test += rr + rd
            self.sum_test2 += rr + 2.0 * rd + dd
            self.max_abs_d = max(self.max_abs_d, float(d.max()), -float(d.min()))
            # min / max on the caller's values (float32 usually: half the bytes, the same numbers)
            mn, mx = rc.min(), rc.max()
            self.ref_min = min(self.ref_min, float(mn))
            self.ref_max = max(self.ref_max, float(mx))
            # Clip counts: a chunk whose min (max) is not beyond the range has none, so most chunks cost
            # no pass. The scalar test compares in the same arithmetic as the element-wise one.
            if clip_lo is not None and mn < clip_lo:
                self.clip_lo_count += int(np.count_nonzero(rc < clip_lo))
            if clip_hi is not None and mx > clip_hi:
                self.clip_hi_count += int(np.count_nonzero(rc > clip_hi))

    def merge(self, other: ErrorStats) -> ErrorStats:
        """Add another accumulator's sums into this one. Returns ``self``."""
        if self.n_codes and other.n_codes and (self.qmin, self.qmax) != (other.qmin, other.qmax):
            raise ValueError("cannot merge statistics of different code ranges")
        if other.n_codes:
            self.qmin, self.qmax = other.qmin, other.qmax
        self.n += other.n
        self.sum_d += other.sum_d
        self.sum_d2 += other.sum_d2
        self.sum_ref2 += other.sum_ref2
        self.sum_test2 += other.sum_test2
        self.sum_ref_test += other.sum_ref_test
        self.max_abs_d = max(self.max_abs_d, other.max_abs_d)
        self.ref_min = min(self.ref_min, other.ref_min)
        self.ref_max = max(self.ref_max, other.ref_max)
        self.n_codes += other.n_codes
        self.q_lo_count += other.q_lo_count
        self.q_hi_count += other.q_hi_count
        self.hist = self.hist + other.hist
        self.n_clip_checked += other.n_clip_checked
        self.clip_lo_count += other.clip_lo_count
        self.clip_hi_count += other.clip_hi_count
        return self

    def copy(self) -> ErrorStats:
        """An independent copy."""
        return ErrorStats.from_dict(self.to_dict())

    # ------------------------------------------------------------------ derived figures
    @property
    def mse(self) -> float:
        """Mean of ``d^2`` over all elements (``nan`` when empty)."""
        return self.sum_d2 / self.n if self.n else math.nan

    @property
    def rmse(self) -> float:
        """Square root of :attr:`mse`."""
        return math.sqrt(self.mse) if self.n else math.nan

    @property
    def mean_error(self) -> float:
        """Mean of ``d`` (the bias of the error) over all elements."""
        return self.sum_d / self.n if self.n else math.nan

    @property
    def sqnr_db(self) -> float:
        """``10 log10(sum ref^2 / sum d^2)``; +inf if d == 0 everywhere, -inf if ref == 0 but d != 0."""
        if not self.n:
            return math.nan
        if self.sum_d2 == 0.0:
            return math.inf
        if self.sum_ref2 == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.sum_ref2 / self.sum_d2)

    @property
    def cosine(self) -> float:
        """``sum(ref*test) / sqrt(sum ref^2 * sum test^2)``; 1 when both are zero, nan if only one is."""
        if not self.n:
            return math.nan
        if self.sum_ref2 == 0.0 and self.sum_test2 == 0.0:
            return 1.0
        if self.sum_ref2 == 0.0 or self.sum_test2 == 0.0:
            return math.nan
        return self.sum_ref_test / math.sqrt(self.sum_ref2 * self.sum_test2)

    @property
    def max_abs(self) -> float:
        """Largest ``|d|`` seen."""
        return self.max_abs_d if self.n else math.nan

    def rmse_over_scale(self, scale: float) -> float:
        """RMSE in units of the quantization step ``scale`` (``2^-p``): RMSE in LSB."""
        return self.rmse / scale

    @property
    def sat_lo_frac(self) -> float:
        """Fraction of codes equal to ``qmin`` (nan without codes)."""
        return self.q_lo_count / self.n_codes if self.n_codes else math.nan

    @property
    def sat_hi_frac(self) -> float:
        """Fraction of codes equal to ``qmax`` (nan without codes)."""
        return self.q_hi_count / self.n_codes if self.n_codes else math.nan

    @property
    def clip_lo_frac(self) -> float:
        """Fraction of reference values below ``clip_lo`` (nan when no range was given)."""
        return self.clip_lo_count / self.n_clip_checked if self.n_clip_checked else math.nan

    @property
    def clip_hi_frac(self) -> float:
        """Fraction of reference values above ``clip_hi`` (nan when no range was given)."""
        return self.clip_hi_count / self.n_clip_checked if self.n_clip_checked else math.nan

    @property
    def codes_used(self) -> int:
        """How many distinct codes in ``[qmin, qmax]`` occurred at least once."""
        lo, hi = self.qmin + CODE_OFFSET, self.qmax + CODE_OFFSET + 1
        return int(np.count_nonzero(self.hist[lo:hi]))

    @property
    def codes_used_frac(self) -> float:
        """:attr:`codes_used` over the number of codes in ``[qmin, qmax]`` (nan without codes)."""
        return self.codes_used / (self.qmax - self.qmin + 1) if self.n_codes else math.nan

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict[str, Any]:
        """Raw sums and derived figures, each as ``{"value": ..., "how": "..."}``.

        Non-finite values stay Python floats (``inf``/``nan``); use :func:`json_safe` for strict JSON.
        :meth:`from_dict` rebuilds the accumulator from the raw entries.
        """
        over = "over all elements (samples x positions x channels) seen"

        def e(value: Any, how: str) -> dict[str, Any]:
            return {"value": value, "how": how}

        return {
            "n": e(self.n, "number of elements compared, " + over),
            "sum_d": e(self.sum_d, "sum of d = test - ref, float64, " + over),
            "sum_d2": e(self.sum_d2, "sum of d^2, float64, " + over),
            "sum_ref2": e(self.sum_ref2, "sum of ref^2, float64, " + over),
            "sum_test2": e(self.sum_test2, "sum of test^2, float64, " + over),
            "sum_ref_test": e(self.sum_ref_test, "sum of ref*test, float64, " + over),
            "max_abs_d": e(self.max_abs_d, "largest |test - ref|, in the tensor's float units, " + over),
            "ref_min": e(self.ref_min, "smallest reference value, " + over),
            "ref_max": e(self.ref_max, "largest reference value, " + over),
            "n_codes": e(self.n_codes, "number of int8 codes counted (0: no codes were given)"),
            "qmin": e(self.qmin, "lowest code of the integer range"),
            "qmax": e(self.qmax, "highest code of the integer range"),
            "q_lo_count": e(self.q_lo_count, "codes equal to qmin"),
            "q_hi_count": e(self.q_hi_count, "codes equal to qmax"),
            "hist": e(self.hist.tolist(), "count of each code, bin i = code i - 128, 256 bins"),
            "n_clip_checked": e(self.n_clip_checked, "reference values checked against the float range"),
            "clip_lo_count": e(self.clip_lo_count, "reference values below qmin * 2^-p (strictly)"),
            "clip_hi_count": e(self.clip_hi_count, "reference values above qmax * 2^-p (strictly)"),
            "mse": e(self.mse, "mean of d^2, squared float units, " + over),
            "rmse": e(self.rmse, "sqrt(mse), float units"),
            "mean_error": e(self.mean_error, "mean of d, float units, " + over),
            "sqnr_db": e(
                self.sqnr_db,
                "10*log10(sum ref^2 / sum d^2) in dB, sums " + over + "; +inf when d == 0 everywhere",
            ),
            "cosine": e(self.cosine, "sum(ref*test) / sqrt(sum ref^2 * sum test^2), " + over),
            "sat_lo_frac": e(self.sat_lo_frac, "codes equal to qmin / codes counted"),
            "sat_hi_frac": e(self.sat_hi_frac, "codes equal to qmax / codes counted"),
            "clip_lo_frac": e(self.clip_lo_frac, "reference values below qmin * 2^-p / values checked"),
            "clip_hi_frac": e(self.clip_hi_frac, "reference values above qmax * 2^-p / values checked"),
            "codes_used_frac": e(
                self.codes_used_frac, "distinct codes in [qmin, qmax] seen at least once / (qmax - qmin + 1)"
            ),
        }

    _RAW = (
        "n", "sum_d", "sum_d2", "sum_ref2", "sum_test2", "sum_ref_test", "max_abs_d", "ref_min",
        "ref_max", "n_codes", "qmin", "qmax", "q_lo_count", "q_hi_count", "n_clip_checked",
        "clip_lo_count", "clip_hi_count",
    )  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorStats:
        """Rebuild from :meth:`to_dict` output (derived entries are ignored and recomputed)."""

        def val(key: str) -> Any:
            v = data[key]
            return v["value"] if isinstance(v, dict) else v

        stats = cls()
        for key in cls._RAW:
            current = getattr(stats, key)
            raw = val(key)
            setattr(stats, key, int(raw) if isinstance(current, int) else _float(raw))
        hist = np.asarray(val("hist"), dtype=np.int64)
        if hist.shape != (N_CODES,):
            raise ValueError(f"code histogram must have {N_CODES} bins, got {hist.shape}")
        stats.hist = hist
        return stats


def ratio_se_db(num: np.ndarray, den: np.ndarray) -> float:
    """Standard error (dB) of ``10 log10(sum(num) / sum(den))`` over the samples whose per-sample sums
    ``num`` and ``den`` are (an output SQNR: signal and noise powers; a remedy's gain: the noise before
    and after it), by the leave-one-out jackknife. nan with fewer than 2 samples or an undefined ratio."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    n = len(num)
    if n < 2 or len(den) != n:
        return math.nan
    rest_num, rest_den = num.sum() - num, den.sum() - den
    if not (np.all(rest_num > 0) and np.all(rest_den > 0)):
        return math.nan
    loo = 10.0 * np.log10(rest_num / rest_den)
    return float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))


def _float(v: Any) -> float:
    # json_safe() writes non-finite numbers as strings; accept them back.
    return float(v)


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` with non-finite floats as the strings "inf", "-inf", "nan" (strict JSON)."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, np.floating):
        return json_safe(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
