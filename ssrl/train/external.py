"""Encoders pretrained elsewhere: their weights read safely, checked against the encoder, fed through their contract.

``load_external(entry, data_rate, record_samples)`` is what the driver runs for every `pretrained:` entry of
a sweep file before Ray starts: it hashes the file, reads it without running code (safetensors, or
``torch.load(weights_only=True)``), keeps the keys under ``key_prefix``, builds the encoder, checks keys
and shapes, and runs the adapted encoder once. Each failure is one ``CheckpointError`` (the file) or
``ConfigError`` (the entry) line. The loaded encoder is then saved as an ssrl checkpoint that carries its
input contract (``save_external``), so fine-tuning trials fetch and rebuild it like any pretrained encoder,
and ``adapt`` wraps it in ssrl.models.adapter.InputAdapter on the trial's device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssrl.config import ConfigError, PretrainedEntry
from ssrl.data import ECGData
from ssrl.data.ptbxl import LEADS
from ssrl.models import build_encoder
from ssrl.models.adapter import InputAdapter
from ssrl.registry import PluginError
from ssrl.train.checkpoint import FORMAT, CheckpointError, save_encoder

SHOWN = 4  # keys named per kind of mismatch in an error line


@dataclass
class LoadedExternal:
    """An entry whose weights loaded into its encoder: what the sweep publishes and records."""

    entry: PretrainedEntry
    encoder: nn.Module
    encoder_name: str
    kwargs: dict[str, Any]
    leads: tuple[str, ...]
    sha256: str
    n_ignored: int  # keys of the file outside key_prefix (a head, a projector), left out

    def resolved(self) -> PretrainedEntry:
        """The entry with what loading found: its encoder and kwargs (an ssrl checkpoint names them), sha256."""
        return dataclasses.replace(self.entry, encoder=self.encoder_name, kwargs=self.kwargs, leads=self.leads,
                                   sha256=self.sha256)

    def record(self) -> dict[str, Any]:
        """What results.json, MLflow tags and the console say about it: name, file, sha256, encoder, contract."""
        e = self.entry
        return {"name": e.name, "weights": str(Path(e.weights).expanduser().resolve()), "sha256": self.sha256,
                "encoder": self.encoder_name, "kwargs": self.kwargs, "key_prefix": e.key_prefix,
                "input": {**e.contract(), "leads": list(self.leads)}}


def lead_index(leads: tuple[str, ...] | list[str], where: str = "leads") -> tuple[int, ...]:
    """Positions of lead names in the data's order (LEADS), case-insensitive; an unknown name is a ConfigError."""
    known = {name.lower(): i for i, name in enumerate(LEADS)}
    unknown = [lead for lead in leads if str(lead).lower() not in known]
    if unknown:
        raise ConfigError(f"{where}: lead(s) {', '.join(map(str, unknown))} unknown; PTB-XL has {', '.join(LEADS)}")
    return tuple(known[str(lead).lower()] for lead in leads)


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """A file's tensors by key without running any code, and the header when it is an ssrl encoder checkpoint."""
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found; fix the path in the sweep file's pretrained entry")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), None
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file, truncated or damaged ({_first(e)})"
                                  ) from None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise CheckpointError(f"{path}: refused: this pickle carries code that loading would run "
                                  f"({_first(e, 'GLOBAL')}); save only tensors: torch.save(model.state_dict(), "
                                  "path) or safetensors") from None
        raise CheckpointError(f"{path}: not a readable torch file, truncated or damaged ({_first(e)})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable torch file, truncated or damaged ({_first(e)})") from None
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        return blob["state_dict"], blob
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        blob = blob["state_dict"]  # {"state_dict": ..., "epoch": ...} as training scripts often save
    if not isinstance(blob, dict) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"{path}: holds a {type(blob).__name__}, not a state_dict (a mapping of names to "
                              "tensors); save torch.save(encoder.state_dict(), path)")
    return blob, None


def _first(e: BaseException, find: str = "") -> str:
    """One line of an exception: the one that mentions `find`, else the first; at most 160 characters."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    return next((ln for ln in lines if find and find in ln), lines[0])[:160]


def select_keys(state: dict[str, torch.Tensor], prefix: str, path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The keys under `prefix` with it stripped (all keys when there is none), and how many were left out."""
    if not prefix:
        return dict(state), 0
    kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not kept:
        raise CheckpointError(f"{path}: no key starts with key_prefix {prefix!r} (keys look like "
                              f"{', '.join(list(state)[:SHOWN])}); fix key_prefix")
    return kept, len(state) - len(kept)


def fit_weights(encoder: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load `state` into `encoder` strictly; a mismatch is one line naming missing, unexpected and reshaped keys."""
    want = encoder.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k} (file {list(state[k].shape)}, encoder {list(want[k].shape)})" for k in want
              if k in state and state[k].shape != want[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(found)} {kind}: {', '.join(found[:SHOWN])}{', ...' if len(found) > SHOWN else ''}"
                 for kind, found in (("missing", missing), ("unexpected", unexpected), ("shapes differ", shapes))
                 if found]
        raise CheckpointError(f"{path}: weights do not fit {what}: {'; '.join(parts)}; check encoder, kwargs, "
                              "leads and key_prefix")
    encoder.load_state_dict(state)


def load_external(entry: PretrainedEntry, data_rate: int, record_samples: int) -> LoadedExternal:
    """Build an entry's encoder and load its weights, checking everything a trial would trip over."""
    where = f"pretrained {entry.name}"
    leads = entry.leads or LEADS
    lead_index(leads, where)
    record_s = record_samples / data_rate
    if entry.seconds > record_s:
        raise ConfigError(f"{where}: seconds {entry.seconds:g} is longer than the records ({record_s:g} s at "
                          f"{data_rate} Hz); use at most {record_s:g}")
    path = Path(entry.weights).expanduser()
    state, header = read_weights(path)
    sha = sha256_of(path)
    if entry.sha256 and entry.sha256.lower() != sha:
        raise CheckpointError(f"{path}: sha256 {sha[:16]}... differs from the {entry.sha256[:16]}... that {where} "
                              "pins; point weights at the pinned file or update sha256")
    state, ignored = select_keys(state, entry.key_prefix, path)
    name = entry.encoder or (header or {}).get("encoder", "")
    if not name:
        raise ConfigError(f"{where}: set encoder (a built-in name or 'package.module:Class'); {path.name} does "
                          "not name one")
    kwargs = dict(entry.kwargs) if entry.encoder or header is None else json.loads(header["encoder_kwargs"])
    call = f"{name}(in_leads={len(leads)}{''.join(f', {k}={v!r}' for k, v in kwargs.items())})"
    try:
        encoder = build_encoder(name, in_leads=len(leads), **kwargs)
    except PluginError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's constructor or kwargs: one line
        raise ConfigError(f"{where}: building {call} failed ({type(e).__name__}: {_first(e)})") from None
    fit_weights(encoder, state, path, call)
    loaded = LoadedExternal(entry, encoder, name, kwargs, tuple(leads), sha, ignored)
    _try_once(loaded, data_rate, record_samples, where)
    return loaded


def _try_once(loaded: LoadedExternal, data_rate: int, record_samples: int, where: str) -> None:
    """Run the adapted encoder on two zero records: it must give (2, out_dim)."""
    adapter = adapt(loaded.encoder, loaded.record()["input"], data_rate, torch.zeros(12), torch.ones(12))
    try:
        with torch.no_grad():
            h = adapter.eval()(torch.zeros(2, 12, record_samples))  # x: (2, 12, T) -> h: (2, out_dim)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{where}: the encoder failed on its adapted input ({type(e).__name__}: {_first(e)})"
                          ) from None
    if tuple(h.shape) != (2, adapter.out_dim):
        raise ConfigError(f"{where}: the encoder returned shape {tuple(h.shape)} for 2 records, but its out_dim "
                          f"is {adapter.out_dim}")


def save_external(path: Path, loaded: LoadedExternal) -> None:
    """The loaded encoder as an ssrl checkpoint that carries its input contract (what trials rebuild)."""
    record = loaded.record()
    save_encoder(path, loaded.encoder, loaded.encoder_name, loaded.kwargs, record,
                 in_leads=len(loaded.leads), input_contract=record["input"], sha256=loaded.sha256)


def adapt(encoder: nn.Module, contract: dict[str, Any], data_rate: int, mean: Any, std: Any,
          random_crop: bool = False, seed: int = 0) -> InputAdapter:
    """`encoder` behind its input contract, fed from standardised records at `data_rate` (mean, std: (12,))."""
    rate = int(contract["sampling_rate"])
    return InputAdapter(encoder, data_rate=data_rate, rate=rate, samples=round(float(contract["seconds"]) * rate),
                        lead_index=lead_index(contract["leads"] or LEADS), normalise=contract["normalise"],
                        mean=mean, std=std, random_crop=random_crop, seed=seed)


def adapt_to_data(encoder: nn.Module, contract: dict[str, Any], data: ECGData, random_crop: bool,
                  seed: int) -> InputAdapter:
    """`encoder` behind its contract, fed from `data`'s standardised records."""
    return adapt(encoder, contract, data.sampling_rate, data.mean, data.std, random_crop, seed)
