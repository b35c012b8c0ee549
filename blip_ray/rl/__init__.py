"""The continual-RL track on RLlib's new API stack. Nothing is imported here, so reading a spec
(``settings``, ``sequences``) never imports RLlib; each module's docstring says what it holds."""
