"""Who does the elementwise work of the fused cores' time steps, `train.elementwise=aten|cpp|seq|auto`.

aten (what every committed run before the sequence kernel used): a dozen ATen calls per step and
direction, each a pass through the gate buffers. cpp: `cerebral/csrc/gates.cpp`, one pass per
step forward and one backward (gates, cell update, the summed h and their gradients). seq:
`cerebral/csrc/sequence.cpp`, the whole loop over a layer's steps in C++, each step one GEMM and
one pass that also adds the input projection and writes h in the GEMMs' dtype, the recurrent
weight packed once for oneDNN. auto (the default): a run folder keeps what it recorded; a new run
gets seq on the CPUs of SEQUENCE_CPUS, aten elsewhere (`resolve_elementwise`). The kernels are
built together with `torch.utils.cpp_extension` on first use for this CPU's vector instructions
(about 20 s; then PyTorch's extension cache, ~/.cache/torch_extensions, holds them). The choices
agree to float rounding, not bit for bit: a run trains with one of them throughout.

The kernels apply to CPU tensors of float32 (with bf16 GEMM operands under autocast) and float64
(the float64 gradcheck of the tests), on CPUs only (cpp or seq with a CUDA device is refused);
models without a fused core (`single_lstm`'s nn.LSTM, the equation-path variants) and
torch.compile'd steps run as with aten. The AVX2 and AVX512 builds contract multiply-adds into
FMAs, a build without either does not: their bits differ.
"""

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from cerebral.errors import ConfigError
from cerebral.steps import cpu_features, cpu_model, resolve_device

ELEMENTWISE = ("aten", "cpp", "seq")
CHOICES = (*ELEMENTWISE, "auto")  # train.elementwise; `resolve_elementwise` turns auto into one of ELEMENTWISE
# The CPUs (`cpu_key`) on which `auto` gives a new run the sequence kernel: there it trained faster
# than the ATen calls in fp32 and bf16, by medians and by minima of `make bench`, and its first 50
# epochs passed the fidelity check against the committed curves (docs/PERFORMANCE.md, the runs in
# results/kernel-fidelity). Elsewhere `auto` is aten, the choice every committed run before it made.
SEQUENCE_CPUS = {
    # seq / aten step, medians / minima (results/bench-zen4.json): Cerebral 0.90 / 0.91 fp32,
    # 0.83 / 0.84 bf16; two-stacked 0.86 / 0.87, 0.75 / 0.74. Fidelity, mean |seq - aten| over 50
    # epochs: two-stacked 2.0e-8 fp32, 7.1e-6 bf16; Cerebral 1.3e-8, 1.8e-5.
    "AMD EPYC (cpu family 25, model 17; avx512_bf16)": "Zen 4 EPYC, listed 2026-12-07",
}
CSRC = Path(__file__).parent / "csrc"
SOURCES = (CSRC / "gates.cpp", CSRC / "sequence.cpp")  # and the headers they include (csrc/*.h)
# Per capability PyTorch dispatches its own kernels to: one build each, so that a home folder
# shared by machines of different CPUs never loads instructions a CPU lacks.
ARCH_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mprefer-vector-width=512"],
    "AVX2": ["-mavx2", "-mfma"],
}
# -fno-trapping-math lets GCC vectorise the clamps and conversions of the exp; -fopenmp makes
# at::parallel_for parallel (it binds to the libgomp PyTorch has loaded).
FLAGS = ["-O3", "-std=c++20", "-fno-trapping-math", "-fopenmp"]


class KernelBuildError(ConfigError):
    """train.elementwise=cpp or seq where the kernels cannot be built (no compiler, no ninja)."""


def _ninja_on_path():
    """cpp_extension runs `ninja` from PATH; the pip package's copy lies beside the venv's python,
    which need not be on PATH (`.venv/bin/python -m ...`)."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _cause(error):
    """The line of a build error that says what went wrong (a compiler's "error:", a missing
    program), not the command line cpp_extension puts first."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    telling = [line for line in lines if any(word in line for word in ("error:", "not found", "fatal", "No such file"))]
    return (telling or lines)[0][:300]


def _fail(cause):
    return KernelBuildError(f"train.elementwise=cpp or seq: could not build the C++ kernels of {CSRC} ({cause}); they "
                            f"need a C++ compiler (GCC 11 or later) and ninja (`pip install ninja`), or use "
                            f"train.elementwise=aten")


def kernel_build():
    """The kernels' compiler flags and build folder: one per checkout, source, flags, torch (its
    version and its folder, whose headers the build includes by path) and Python, so that checkouts
    and venvs sharing ~/.cache neither rebuild each other's nor load another's."""
    from torch.utils import cpp_extension

    capability = torch.backends.cpu.get_cpu_capability()
    flags = FLAGS + ARCH_FLAGS.get(capability, [])
    key = " ".join([str(CSRC), *flags, torch.__version__, str(Path(torch.__file__).parent), sys.version]).encode()
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sorted(CSRC.glob("*.[ch]*"))) + key).hexdigest()[:12]
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())
    return flags, root / f"cerebral_gates_{capability.lower()}_{digest}"


@contextlib.contextmanager
def build_lock(build_dir):
    """Held while this process loads the kernels from `build_dir`: an flock, which the OS lets go of
    when its process dies. cpp_extension's own lock is a file that a process killed inside its load
    leaves behind, on which every later load would wait forever; under the flock no process of ours
    is loading, so such a file is a leftover and goes. Without flock (no fcntl, or a file system that
    refuses it) loads go on as cpp_extension's alone."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    with open(build_dir / "cerebral.flock", "w") as guard:
        try:
            locked = fcntl is not None and fcntl.flock(guard, fcntl.LOCK_EX) is None
        except OSError:
            locked = False
        if locked:
            (build_dir / "lock").unlink(missing_ok=True)
        yield


@functools.cache
def kernel_ops():
    """`torch.ops.cerebral` with the step kernel's `gates_forward` and `gates_backward` and the
    sequence kernel's `layer_forward` and `layer_backward` registered, built or loaded from the
    cache; a KernelBuildError naming the cause if they cannot be built."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise _fail(f"no C++ compiler: {compiler!r} is not on PATH")
    _ninja_on_path()
    flags, build_dir = kernel_build()
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its compiler-compatibility banner is not our one line
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        with build_lock(build_dir):
            cpp_extension.load(name=build_dir.name, sources=[str(path) for path in SOURCES],
                               build_directory=str(build_dir), extra_cflags=flags, extra_ldflags=["-fopenmp"],
                               is_python_module=False)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        raise _fail(_cause(e)) from None
    finally:
        logger.setLevel(level)
    return torch.ops.cerebral


def use_elementwise(model, elementwise):
    """Let every fused core in `model` do its elementwise work with `elementwise` (ELEMENTWISE),
    building the kernels first for "cpp" and "seq", so that a failed build stops before any work."""
    if elementwise in ("cpp", "seq"):
        kernel_ops()
    for module in model.modules():
        if hasattr(module, "elementwise"):
            module.elementwise = elementwise
    return model


def cpu_key():
    """This CPU as SEQUENCE_CPUS names it: model name and features, e.g. "AMD EPYC (cpu family 25,
    model 17; avx512_bf16)"."""
    return f"{cpu_model()} ({cpu_features()})"


def has_fused_core(model_cfg):
    """Whether the model of a `conf/model/*.yaml` config trains on the fused path (models.build_core):
    the Cerebral core (not its tied-init ablation, which runs the equations) and the LSTMs on our
    core (post-activation biases, LSTMP); not nn.LSTM, NovoLSTM or the printed-cell ablation."""
    m = model_cfg
    return bool((m.core == "cerebral" and not m.get("tie_init")) or (m.core == "lstm" and (m.get("cells") or m.post_bias)))


def resolve_elementwise(cfg, recorded=None):
    """train.elementwise as a run records it. An explicit value stays; `auto` is the value the run
    folder recorded (`recorded`, if any: a resume keeps its kernel), else "seq" for a fused core
    trained on a CPU of SEQUENCE_CPUS with the fused backend where the kernels build, and "aten"
    everywhere else (CUDA, train.backend=lstm, nn.LSTM, no compiler)."""
    choice = cfg.train.elementwise
    if choice != "auto":
        return choice
    if recorded is not None:
        return recorded
    on_cpu = cfg.device in ("auto", "cpu") and resolve_device(cfg.device).type == "cpu"
    if not (on_cpu and cfg.train.backend != "lstm" and has_fused_core(cfg.model) and cpu_key() in SEQUENCE_CPUS):
        return "aten"
    try:
        kernel_ops()
    except KernelBuildError as e:
        logging.getLogger(__name__).warning("train.elementwise=auto runs the ATen calls: %s", e)
        return "aten"
    return "seq"
