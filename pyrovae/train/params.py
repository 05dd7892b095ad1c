"""The parameters of any pair: modules, ``pyro.module`` and ``pyro.param``.

``nn.Module`` pairs (and bound methods of one, as in Pyro's VAE example) are moved to the
training device and contribute ``parameters()``; parameters a pair declares with
``pyro.module`` / ``pyro.param`` inside plain functions are found the way Pyro's SVI
finds them, from a trace of one loss evaluation (``poutine.trace(param_only=True)``),
which runs under forked random streams so that training draws what it would have drawn.
The checkpoint keeps ``model`` / ``guide`` state dicts (one when both share a module) and
the loose ``pyro.param`` values by name.
"""
from __future__ import annotations

import torch
from pyro import poutine

from pyrovae.checkpoint import load_into
from pyrovae.errors import PyroVAEError
from pyrovae.train.step import owner


class PairParameters:
    """Everything the optimizer updates and the checkpoint stores for ``(model, guide)``."""

    def __init__(self, model, guide, *, device: torch.device):
        self.modules = {}
        for key, fn in (("model", model), ("guide", guide)):
            m = owner(fn)
            if m is not None and all(m is not other for other in self.modules.values()):
                self.modules[key] = m.to(device)
        self.loose: dict[str, torch.Tensor] = {}
        self.device = device
        self.complete = owner(model) is not None and owner(guide) is not None

    def collect(self, loss) -> None:
        """Find ``pyro.param`` / ``pyro.module`` parameters from one evaluation ``loss()``."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), poutine.trace(param_only=True) as tr:
            loss()
        known = {id(p) for m in self.modules.values() for p in m.parameters()}
        for name, site in tr.trace.nodes.items():
            value = site["value"]
            leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
            if id(leaf) not in known and leaf.requires_grad:
                if leaf.device != self.device:
                    raise PyroVAEError(f"pyro.param {name!r} is on {leaf.device} but training "
                                       f"runs on {self.device}; create it there or pass "
                                       f"TrainConfig(device={str(leaf.device)!r})")
                self.loose[name] = leaf
                known.add(id(leaf))

    def parameters(self) -> list[torch.Tensor]:
        params = {id(p): p for m in self.modules.values() for p in m.parameters()
                  if p.requires_grad}
        params.update({id(p): p for p in self.loose.values()})
        if not params:
            raise PyroVAEError("the model and guide have no parameters to train (declare them "
                               "as nn.Module parameters, with pyro.module or with pyro.param)")
        return list(params.values())

    def state_dict(self) -> dict:
        state = {k: m.state_dict() for k, m in self.modules.items()}
        if self.loose:
            state["params"] = {k: v.detach().clone() for k, v in self.loose.items()}
        return state

    def load_state_dict(self, state: dict, path) -> None:
        load_into(self.modules, state, path)
        for name, value in state.get("params", {}).items():
            if name in self.loose:
                with torch.no_grad():
                    self.loose[name].copy_(value)

    def train(self, mode: bool = True) -> None:
        for m in self.modules.values():
            m.train(mode)
