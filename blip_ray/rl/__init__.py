"""RLlib adapters of the continual-RL track (new API stack only).

- ``sequences``: task sequences (``atari6``, ``cartpole3``) and RLlib's env creator;
- ``module``: :class:`ContinualPPOModule`, the paper's trunk with per-task policy/value heads;
- ``methods``: ``RL_METHODS`` (``blip``, ``online_ewc``, ``finetune``, ``ft_fix``) on top of
  ``blip_ray.methods``;
- ``learners``: :class:`ContinualPPOLearner`, RLlib's PPO torch learner plus the method's hooks;
- ``callbacks``: :class:`ContinualTaskCallback`, task switches, end-of-task steps, evaluation;
- ``config``: :class:`RlExperimentConfig` -> ``build_ppo_config`` -> an RLlib ``PPOConfig``.
"""

from blip_ray.rl.callbacks import ContinualTaskCallback
from blip_ray.rl.config import (
    PpoSettings,
    RlExperimentConfig,
    build_ppo_config,
    size_env_runners,
    stop_criteria,
)
from blip_ray.rl.evaluation import evaluate_task, evaluate_tasks
from blip_ray.rl.learners import ContinualPPOLearner, task_learning_rate
from blip_ray.rl.methods import RL_METHODS, RlMethod, get_rl_method, register_rl_method
from blip_ray.rl.module import ContinualPPOModule, ModuleSettings
from blip_ray.rl.sequences import (
    ENV_NAME,
    RL_SEQUENCES,
    ContinualEnv,
    RlSequence,
    RlTask,
    get_rl_sequence,
    make_training_env,
    register_envs,
    register_rl_sequence,
)
from blip_ray.rl.settings import ContinualSettings

__all__ = [
    "ENV_NAME",
    "RL_METHODS",
    "RL_SEQUENCES",
    "ContinualEnv",
    "ContinualPPOLearner",
    "ContinualPPOModule",
    "ContinualSettings",
    "ContinualTaskCallback",
    "ModuleSettings",
    "PpoSettings",
    "RlExperimentConfig",
    "RlMethod",
    "RlSequence",
    "RlTask",
    "build_ppo_config",
    "evaluate_task",
    "evaluate_tasks",
    "get_rl_method",
    "get_rl_sequence",
    "make_training_env",
    "register_envs",
    "register_rl_method",
    "register_rl_sequence",
    "size_env_runners",
    "stop_criteria",
    "task_learning_rate",
]
