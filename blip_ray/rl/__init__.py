"""The continual-RL track on RLlib's new API stack.

- ``settings``: typed run settings (PPO, the spec's ``rl:`` section, one trial), no Ray;
- ``sequences``: task sequences (``atari6``, ``cartpole3``) and RLlib's env creator, no Ray;
- ``module``: :class:`~blip_ray.rl.module.ContinualPPOModule`, the paper's trunk with per-task
  policy and value heads;
- ``learners``: RLlib's PPO torch learner plus a ``blip_ray.methods`` method's hooks;
- ``callbacks``: task switches, end-of-task steps, evaluation;
- ``config``: ``ContinualPPOConfig``, a ``PPOConfig`` that carries the ``ContinualSettings``;
- ``run``: the task loop of one trial, next to ``blip_ray.supervised.run_sequence``.

Nothing is imported here, so reading a spec (``settings``, ``sequences``) never imports RLlib.
"""
