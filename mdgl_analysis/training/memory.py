"""How much memory training a config needs, checked before anything is allocated.

:func:`estimate_bytes` is an upper estimate of the peak memory of a training process: building
the network (spec B, in float64 on the CPU: two dense ``n_rec x n_rec`` and one dense
``n_in x n_in`` balanced matrices and their eigenvalues), the parameters with their signs, masks,
gradients and Adam state, one training iteration (the task's batch, pass 1, the rule's backward
recursion, the constrained Adam step), a validation pass, the same-batch comparison rules and,
when recording is on, a recorded iteration (the full trajectory, every recorded rule's signal,
the synapse lists and the eligibility traces in time chunks, the writer's queue). Every term is
counted from what :mod:`mdgl_analysis.network`, :mod:`mdgl_analysis.rules`,
:mod:`mdgl_analysis.training.loop` and :mod:`mdgl_analysis.recording.writer` allocate, rounded
up; measured peaks of small configs lie below it (``tests/test_memory.py``).

:func:`check_memory` compares the estimate with the memory this machine has available (RAM on
the CPU, free memory of the GPU) and raises :class:`~mdgl_analysis.config.ConfigError` (``mdgl``:
exit status 2, one line) naming the config fields that make it too large.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from mdgl_analysis.config import Config, ConfigError, compare_rules, record_iterations, task_of

# Extra [time, batch, neuron] arrays a rule allocates on top of the forward pass (in units of the
# run dtype): BPTT's adjoint keeps dE/dI and L_tot, e-prop dE/dI, the MDGL family its signal and
# dE/dI, online MDGL also the filtered psi, the filtered learning signal and their product.
RULE_ARRAYS = {
    "bptt": 2,
    "eprop": 1,
    "mdgl": 2,
    "mdgl_exact": 2,
    "mdgl_nonlocal": 2,
    "mdgl_online": 7,
    "eprop_random": 2,  # the signal and lam
    "truncated": 3,  # the signal of the last pass, lam and the next signal
}
UNKNOWN_RULE_ARRAYS = 7
# Typical sizes (the paper's): a field far above its typical size is what makes a config large.
TYPICAL = {"n": 100, "batch": 64, "val_batch": 64, "steps": 2000, "n_in": 40, "n_out": 3}


@dataclass(frozen=True)
class Sizes:
    n: int  # recurrent cells
    n_in: int
    n_out: int
    steps: int
    batch: int
    val_batch: int
    itemsize: int  # bytes per value of the run dtype


@dataclass(frozen=True)
class Term:
    """One part of the estimate: bytes, what it is, and the sizes it grows with."""

    bytes: int
    what: str
    factors: tuple[str, ...]


def sizes_of(cfg: Config) -> Sizes:
    task = task_of(cfg)
    return Sizes(
        n=cfg.network.n_rec,
        n_in=task.n_in,
        n_out=task.n_out,
        steps=task.n_steps,
        batch=cfg.train.batch,
        val_batch=cfg.train.val_batch,
        itemsize=8 if cfg.run.dtype == "float64" else 4,
    )


def _recording(cfg: Config) -> bool:
    every, explicit = record_iterations(cfg)
    return every > 0 or bool(explicit)


def _record_rules(cfg: Config) -> list[str]:
    from mdgl_analysis.rules import record_rules

    return record_rules(cfg)


def init_terms(cfg: Config) -> list[Term]:
    """Building the network (float64, on the CPU, whatever the device; spec B).

    Each balanced matrix is a dense ``pre x pre`` float64 matrix: its magnitudes, its signed copy,
    the signed matrix handed to ``eigvals`` and LAPACK's copy of it, plus a workspace (5 arrays);
    W_rec and W_out both start from an ``n_rec x n_rec`` one, W_in from ``n_in x n_in``. The
    finished float64 matrices (magnitudes and signs, 16 bytes a synapse) coexist with the
    model's tensors (magnitudes and signs in the run dtype, the initial mask).
    """
    z = sizes_of(cfg)
    n, i, k, s = z.n, z.n_in, z.n_out, z.itemsize
    synapses = n * n + n * i + n * k
    return [
        Term(5 * 8 * n * n + 16 * n * n, "building the recurrent and readout weights", ("n",)),
        Term(5 * 8 * i * i, "building the input weights (a dense n_in x n_in matrix)", ("n_in",)),
        Term((16 + 2 * s + 1) * synapses, "the initial weights", ("n", "n_in")),
    ]


def train_terms(cfg: Config) -> list[Term]:
    """Everything alive at the peak of a training iteration (recorded or not) or a validation."""
    z = sizes_of(cfg)
    n, i, k, s, t = z.n, z.n_in, z.n_out, z.itemsize, z.steps
    b = max(z.batch, z.val_batch)
    train = cfg.train
    recording = _recording(cfg)
    comparing = train.compare_every > 0
    plain_rules = {train.rule, *(["bptt", *compare_rules(cfg)] if comparing else [])}
    record_rules = set(_record_rules(cfg)) if recording else set()
    rules = plain_rules | record_rules
    terms: list[Term] = []

    # weights: magnitudes, signs, gradients, Adam's two moments (run dtype), initial masks (bool)
    # and the W_rec diagonal mask; per step the effective weights' snapshot and their
    # temporaries, the transposed scaled W_rec of the rollout, the rule's dense gradients and
    # the temporaries of the Adam step; each further rule on the batch keeps its gradients, and
    # the cell-type block masks of MDGL and of the comparison are n_rec x n_rec bools
    per_synapse = (5 * s + 1) + (5 * s + 2) + s * max(0, len(rules) - 1)
    if recording:
        per_synapse += s  # the weights after the update
    masks = 10 if comparing or recording or any(r.startswith("mdgl") for r in rules) else 0
    terms.append(
        Term(
            (per_synapse + 1 + masks) * n * n,
            "the recurrent weights, their gradients and optimiser state",
            ("n",),
        )
    )
    terms.append(Term(per_synapse * n * (i + k), "the input and readout weights", ("n", "n_in")))

    # the trajectory of pass 1, [time, batch, neuron]: a lean pass keeps z, psi (in v's buffer)
    # and the refractory mask and needs the input drive while it runs; the learning signal; the
    # rule's arrays (the largest of the rules computed on the batch); a recorded iteration keeps
    # v, a and the threshold too, and writes BPTT's credit and every rule's signal
    reg = s if train.reg_rate else 0
    lean = 3 * s + 1 + reg + s * max(RULE_ARRAYS.get(r, UNKNOWN_RULE_ARRAYS) for r in plain_rules)
    traj = [(lean * t * z.batch * n, ("n", "batch", "steps"))]
    traj.append(((3 * s + 1 + reg) * t * z.val_batch * n, ("n", "val_batch", "steps")))
    if recording:
        widest = max(RULE_ARRAYS.get(r, UNKNOWN_RULE_ARRAYS) for r in rules | {"bptt"})
        traj.append(((6 * s + 1 + reg + s * widest) * t * z.batch * n, ("n", "batch", "steps")))
    traj_bytes, traj_factors = max(traj)
    terms.append(
        Term(traj_bytes, "the trajectory of the forward pass and its backward", traj_factors)
    )

    # the batch: the task's float64 arrays while it samples (evidence: rates and counts), the
    # inputs in the run dtype and their drive, integer targets and the mask; the readout's
    # [time, batch, output] arrays (outputs, dE/dy, its filtered copy, filter blocks)
    terms.append(
        Term((24 + 2 * s) * t * b * i + 17 * t * b, "the inputs", ("n_in", "batch", "steps"))
    )
    terms.append(Term(10 * s * t * b * k, "the readout", ("n_out", "batch", "steps")))
    if recording:
        terms += _record_terms(cfg, z, rules)
    return terms


def _record_terms(cfg: Config, z: Sizes, rules: set[str]) -> list[Term]:
    """The recorder: synapse lists, per-synapse arrays of a record, eligibility chunks, queue."""
    rec = cfg.record
    net = cfg.network
    n, i, s = z.n, z.n_in, z.itemsize
    dense = rec.layout == "dense"
    syn_rec = n * (n - 1) if dense else min(n * (n - 1), int(n * n * net.p_rec))
    syn_in = n * i if dense else min(n * i, int(n * i * net.p_in))
    syn = syn_rec + syn_in
    factors = ("n", "layout") if dense else ("n",)
    # synapse index lists (int64 post and pre) and the bool mask they come from; int32 copies,
    # gathered weights before/after/difference and every rule's gradients for the file
    lists = 16 * syn + n * n + syn * (8 + s * (3 + 2 * len(rules)))
    terms = [Term(lists, "the recorded synapse lists", factors)]
    rec_item = 2 if rec.dtype == "float16" else 4
    trials = z.batch if rec.trials.strip() == "all" else max(1, _n_trials(rec.trials))
    t0 = int(round(rec.t_start_ms / net.dt))
    t1 = int(round(rec.t_stop_ms / net.dt)) if rec.t_stop_ms else z.steps
    window = max(1, t1 - t0)
    width = max(syn_rec, n)
    chunk = max(1, min(int(rec.chunk_mb * 2**20) // max(1, trials * width * rec_item), window))
    groups = {g.strip() for g in rec.quantities.split(",")}
    if groups & {"traces", "eligibility"}:
        # eps_v, eps_a and e of a chunk for the whole batch, twice (the writer still holds the
        # previous chunk while the recursion fills the next), the recorded trials picked and
        # cast, plus the recursion's [batch, synapse] state (eps_v, eps_a, h, drive, psi x h)
        traces = (6 * z.batch + 2 * trials) * chunk * syn * s + 5 * z.batch * syn * s
        terms.append(
            Term(traces, "the eligibility traces of a recorded chunk", factors + ("batch",))
        )
    put = chunk * trials * width * rec_item
    terms.append(Term(6 * put, "the record writer's queue", factors))
    return terms


def _n_trials(text: str) -> int:
    count = 0
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        lo, _, hi = item.partition("-")
        try:
            count += int(hi) - int(lo) + 1 if hi else 1
        except ValueError:
            count += 1
    return count


def estimate_bytes(cfg: Config, device: torch.device | str = "cpu") -> int:
    """Upper estimate of the peak memory, in bytes, of training ``cfg`` on ``device``.

    On the CPU the network is built in the same memory it trains in, so the estimate is the larger
    of building it and training with it; on a GPU it is what training keeps on the device (the
    network is built in host memory, see :func:`host_bytes`).
    """
    train = _total(train_terms(cfg))
    if torch.device(device).type == "cuda":
        return train
    return max(host_bytes(cfg), train)


def host_bytes(cfg: Config) -> int:
    """Peak host memory of building the network (float64, on the CPU)."""
    return _total(init_terms(cfg))


def _total(terms: list[Term]) -> int:
    """The terms' sum and a tenth more: the allocator's slack (freed blocks not reused at once)."""
    total = sum(term.bytes for term in terms)
    return total + total // 10


def format_bytes(value: float) -> str:
    """``8.0 TB``-style decimal units (1 kB = 1000 bytes); beyond yottabytes, ``1.2e30 bytes``."""
    value = int(value)
    units = ("bytes", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    power = (len(str(abs(value))) - 1) // 3
    if power >= len(units):
        digits = str(value)
        return f"{digits[0]}.{digits[1]}e{len(digits) - 1} bytes"
    if power == 0:
        return f"{value} bytes"
    return f"{value / 1000**power:.1f} {units[power]}"


def available_bytes(device: torch.device | str) -> int:
    """Memory available for a new run on ``device``: free GPU memory, or available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def _task_field(cfg: Config, attr: str) -> str | None:
    """``task.KEY=VALUE`` for the task parameter that makes the task's ``attr`` (n_steps, n_in,
    n_out) large: the one whose reset to its default shrinks it most; None when none does."""
    task = task_of(cfg)
    try:
        value = int(getattr(task, attr))
        defaults = type(task).parameters()
    except Exception:  # noqa: BLE001 - a user's task: naming the field is a courtesy
        return None
    best, gain = None, 1.0
    for key, default in defaults.items():
        current = getattr(task, key, default)
        if isinstance(current, bool | str) or not isinstance(current, int | float):
            continue
        if current == default:
            continue
        probe = copy.copy(task)
        try:
            setattr(probe, key, default)
            smaller = int(getattr(probe, attr))
        except Exception:  # noqa: BLE001 - a property that cannot be computed so
            continue
        if 0 <= smaller < value and value / max(smaller, 1) > gain:
            best, gain = f"task.{key}={current!r}", value / max(smaller, 1)
    return best


def _fields(cfg: Config, factor: str, z: Sizes) -> list[str]:
    net = cfg.network
    if factor == "n":
        out = [
            f"network.{key}={value}"
            for key, value in (("n_regular", net.n_regular), ("n_adaptive", net.n_adaptive))
            if value * 4 >= z.n
        ]
        return out
    if factor in ("batch", "val_batch"):
        return [f"train.{factor}={getattr(cfg.train, factor)}"]
    if factor == "layout":
        return [f"record.layout={cfg.record.layout!r}"]
    attr = {"steps": "n_steps", "n_in": "n_in", "n_out": "n_out"}[factor]
    label = task_of(cfg).name() if callable(getattr(task_of(cfg), "name", None)) else "?"
    return [_task_field(cfg, attr) or f"{attr}={getattr(z, factor)} of task {label}"]


def _ratio(factor: str, z: Sizes, cfg: Config) -> float:
    if factor == "layout":
        return 1.0 / max(cfg.network.p_rec, 1e-12)
    return getattr(z, factor) / TYPICAL[factor]


def dominant(cfg: Config, term: Term) -> list[str]:
    """The config fields that make ``term`` large (``key=value``): every factor within ten times
    of the one furthest above its typical size."""
    z = sizes_of(cfg)
    ratios = {f: _ratio(f, z, cfg) for f in term.factors}
    top = max(ratios.values())
    out: list[str] = []
    for factor, ratio in ratios.items():
        if ratio * 10 >= top:
            out += [f for f in _fields(cfg, factor, z) if f not in out]
    return out


def check_memory(cfg: Config, device: torch.device | str, runs: int = 1) -> None:
    """Raise :class:`ConfigError` (one line) when training ``cfg`` on ``device`` (``runs`` such
    runs at once) cannot fit the memory available there: the estimate, the fields that make it
    large, and what there is."""
    device = torch.device(device)
    checks = [(runs * estimate_bytes(cfg, device), device)]
    if device.type == "cuda":
        checks.append((runs * host_bytes(cfg), torch.device("cpu")))
    for need, where in checks:
        have = available_bytes(where)
        if need <= have:
            continue
        terms = init_terms(cfg) if where.type == "cpu" else []
        terms = terms + (train_terms(cfg) if where == device else [])
        top = max(terms, key=lambda term: term.bytes)
        fields = dominant(cfg, top)
        z = sizes_of(cfg)
        verb = "needs" if len(fields) == 1 else "need"
        place = (
            f"GPU {where} has {format_bytes(have)} free"
            if where.type == "cuda"
            else f"this machine has {format_bytes(have)} available"
        )
        raise ConfigError(
            f"{', '.join(fields)} {verb} about {format_bytes(need)} of memory to train"
            f"{'' if runs == 1 else f' {runs} runs at once'} (mostly "
            f"{top.what}: n_rec={z.n}, n_in={z.n_in}, batch={z.batch}, steps={z.steps}, "
            f"{cfg.run.dtype}); {place}: use smaller sizes"
            f"{'' if runs == 1 else ' or fewer runs at once'}"
        )
