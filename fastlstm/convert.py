"""Swap torch.nn.LSTM for fastlstm.LSTM in a model, and back.

    model = fastlstm.convert(model)   # every nn.LSTM inside becomes a fastlstm.LSTM
    model = fastlstm.revert(model)    # and back

The swap is in place: the parent modules are edited, and the new LSTM takes over the very same
Parameter objects (no copy), so weights, device, dtype, ``requires_grad`` and an optimizer
built before the swap all carry over. The train/eval mode and the module's hooks (forward,
backward, state_dict) carry over too, and ``state_dict()`` keys are unchanged. A module that
appears several times in the model (shared weights) is replaced by one shared new module.

Without ``lengths=`` a converted LSTM computes what nn.LSTM computes on the same input
(padded tensors, unbatched input or a PackedSequence); pass ``lengths=`` to get per-sequence
lengths. Only modules whose type is exactly ``nn.LSTM`` (or exactly ``fastlstm.LSTM`` for
``revert``) are swapped: a subclass may override ``forward``, so it is left alone with a
warning.
"""

import warnings
from typing import Dict, Type

from torch import nn

from .modules import LSTM

__all__ = ["convert", "revert"]

_CONFIG = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
           "bidirectional", "proj_size")
# Hook dictionaries of nn.Module; shared (not copied), so existing RemovableHandles still work.
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks", "_is_full_backward_hook", "_state_dict_hooks",
               "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


def convert(model: nn.Module) -> nn.Module:
    """Replaces every ``torch.nn.LSTM`` in ``model`` by a ``fastlstm.LSTM``, in place.

    Returns ``model``; when ``model`` itself is an ``nn.LSTM`` it returns the new module (a
    module cannot replace itself), so write ``model = fastlstm.convert(model)``.
    """
    return _swap(model, nn.LSTM, LSTM, "fastlstm.convert")


def revert(model: nn.Module) -> nn.Module:
    """The way back: replaces every ``fastlstm.LSTM`` in ``model`` by a ``torch.nn.LSTM``,
    in place, sharing the parameters. Returns ``model`` (or the new module when ``model``
    itself is a ``fastlstm.LSTM``)."""
    return _swap(model, LSTM, nn.LSTM, "fastlstm.revert")


def _swap(model: nn.Module, source: Type[nn.Module], target: Type[nn.Module],
          caller: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller}: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    done: Dict[int, nn.Module] = {}

    def replacement(module: nn.Module, path: str) -> nn.Module:
        if id(module) in done:
            return done[id(module)]
        if type(module) is source:
            new = _rebuild(module, target)
            done[id(module)] = new
            return new
        if isinstance(module, source):
            warnings.warn(f"{caller}: left {path or 'the model'} "
                          f"({type(module).__qualname__}, a subclass of "
                          f"{source.__module__}.{source.__qualname__}) as it is: a subclass "
                          f"may override forward")
        done[id(module)] = module
        # module._modules, not named_children(): that skips a child already seen under another
        # name of the same parent (self.a = self.b = lstm), which would stay an nn.LSTM.
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            new_child = replacement(child, f"{path}.{name}" if path else name)
            if new_child is not child:
                setattr(module, name, new_child)
        return module

    return replacement(model, "")


def _rebuild(old: nn.Module, target: Type[nn.Module]) -> nn.Module:
    config = {key: getattr(old, key) for key in _CONFIG}
    # Built on the meta device (no memory, no initialisation cost); the parameters are then
    # the old module's own.
    new = target(**config, device="meta")
    for name in old._flat_weights_names:
        value = getattr(old, name)
        if name in new._parameters and not isinstance(value, nn.Parameter):
            # A plain tensor in place of a parameter (e.g. set by a reparametrisation).
            del new._parameters[name]
        setattr(new, name, value)
    if isinstance(new, nn.LSTM):
        new._init_flat_weights()  # refreshes nn.LSTM's weight cache (cuDNN's flat buffer)
    new.train(old.training)
    for hooks in _HOOK_DICTS:
        if hooks in old.__dict__:
            setattr(new, hooks, old.__dict__[hooks])
    return new
