"""Recording: forward hooks on named layers, streamed through reducers, and the ``probe`` CLI.

``probe`` takes any ``torch.nn.Module`` and a dataset, and records the chosen layers in one
streaming pass on the model's device.
"""

__all__: list[str] = []
