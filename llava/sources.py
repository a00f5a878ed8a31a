"""Where a checkpoint comes from, checked before transformers is asked: one line instead of a hub
error about repo-id formats, or retry warnings for half a minute when there is no network.

`check_source(name_or_path, key)`:
* an absolute, `./`, `../` or `~` path that does not exist -> "folder does not exist";
* an existing local folder (or file) -> left to the loader (it names a missing config.json);
* a hub id (`name` or `org/name`) already in the Hugging Face cache -> fine, also offline;
* a hub id not in the cache: with `HF_HUB_OFFLINE=1` refused at once, naming it; otherwise the hub's
  host is tried once (3 s, skipped behind a proxy) and an unreachable host is refused, naming
  `HF_HUB_OFFLINE=1` (set, it fails without trying).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from utils.errors import UserError

PROBE_SECONDS = 3.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def looks_like_path(name: str) -> bool:
    """Written as a file-system path (absolute, `./`, `../`, `~`), so never a hub id."""
    return os.path.isabs(name) or name in (".", "..") or name.startswith(("./", "../", "~", ".\\", "..\\"))


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set to a true value."""
    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an id the cache cannot hold: let the loader say why
        return False


def _endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except Exception:  # noqa: BLE001
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def unreachable(url: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why the host of `url` cannot be reached within `timeout` seconds (name lookup included), or None."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    why: list[str] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as e:
            why.append(str(e.strerror or e))
        else:
            why.append("")

    t = threading.Thread(target=probe, daemon=True)  # a name lookup can hang past any socket timeout
    t.start()
    t.join(timeout)
    if not why:
        return f"no answer within {timeout:g} s"
    return why[0] or None


def check_source(name_or_path: str, key: str = "model.name_or_path") -> None:
    """Raise UserError (one line naming `key`) when `name_or_path` can be neither read locally nor
    downloaded; see the module docstring."""
    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.exists():
        return
    if looks_like_path(name):
        raise UserError(f"{key}={name}: folder does not exist")
    if not _HUB_ID.match(name):
        raise UserError(f"{key}={name}: no such local folder, and not a hub id (name or org/name)")
    if _cached(name):
        return
    if hub_offline():
        raise UserError(f"{key}={name}: not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE=1 "
                        f"forbids downloading it; download it where there is a network (huggingface-cli download "
                        f"{name}) or give a local folder")
    if any(os.environ.get(k) for k in _PROXIES):
        return  # behind a proxy a direct probe says nothing; the download will tell
    url = _endpoint()
    why = unreachable(url)
    if why:
        raise UserError(f"{key}={name}: not a local folder and not in the Hugging Face cache, and {urlparse(url).hostname} "
                        f"cannot be reached ({why}); connect to download it or give a local folder "
                        "(with HF_HUB_OFFLINE=1 this fails at once, without trying the network)")


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def check_checkpoint_folder(folder: str | Path, key: str = "model.name_or_path") -> None:
    """Raise UserError (one line naming the file) when a local checkpoint folder cannot be a checkpoint:
    config.json missing, not valid JSON or without `model_type`; no weights file; a `.safetensors` file
    whose header does not cover the file (truncated, empty, or not safetensors). Only headers are read.

    Args:
        folder: the local folder given as `key`.
        key: the setting named in the message.
    """
    import json

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"{key}={folder}: not a folder (a checkpoint is a folder with config.json and weights)")
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(f"{config}: missing; {key}={folder} is not a saved checkpoint (save_pretrained writes config.json)")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{config}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise UserError(f"{config}: has no \"model_type\" (a string such as \"llava\"); it is not a transformers config")
    weights = sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))
    if not weights:
        raise UserError(f"{key}={folder}: no weights file (model.safetensors or pytorch_model.bin) beside config.json")
    for path in weights:
        if path.suffix == ".safetensors":
            _check_safetensors(path)


def _check_safetensors(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        size = path.stat().st_size
        raise UserError(f"{path}: not a readable safetensors file ({size} bytes; {str(e).splitlines()[0]}): "
                        f"truncated or corrupt; download or build it again") from None


def unsafe_pickle_message(folder: str, error: BaseException) -> str:
    """The one line for weights that `torch.load(weights_only=True)` refused (the pickle was not run).

    Args:
        folder: the checkpoint folder.
        error: the `pickle.UnpicklingError` transformers raised.
    """
    bins = sorted(Path(folder).expanduser().glob("pytorch_model*.bin"))
    where = ", ".join(str(p) for p in bins) or f"the weights of {folder}"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    found = re.search(r"Unsupported global: (?:GLOBAL )?([^\s]+)", text)
    why = f"unsupported global {found.group(1)}" if found else "not a plain tensor pickle"
    return (f"{where}: a pickle that torch.load(weights_only=True) refuses ({why}); it was not run; "
            f"convert it to model.safetensors where you trust its source")
