"""`EnterpriseHPC-v0`: the cluster as a gymnasium env whose actions and observations are text.

A thin layer over `Incident` (the one episode loop, through `TaskSession`): an action is one
command line typed at the agent's prompt, an observation is what the terminal printed. The task
sets up the incident and grades every step; this module only translates. Registered on
`import hpcgym` with a lazy entry point.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium

from hpcgym.episode import DEFAULT_STEP_SECONDS
from hpcgym.episode.pool import EpisodeOptions, EpisodePool
from hpcgym.interfaces import default_images_dir
from hpcgym.interfaces.session import TaskSession, draw_seed, prompt
from hpcgym.interfaces.spaces import ShellCommand, TerminalText
from hpcgym.interfaces.task import TaskRegistry, default_registry
from hpcgym.runtime import Runtime

ENV_ID = "EnterpriseHPC-v0"


class SharedRuntimes:
    """The runtimes that envs made without a `runtime` share: one per images dir, closed with its last env.

    A `Runtime` is meant to be one per process (it owns the control channel, the unpacked images and the
    start-up sweep); a vector env of eight should not make eight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Path, tuple[Runtime, int]] = {}

    def acquire(self, images_dir: Path) -> Runtime:
        key = images_dir.resolve()
        with self._lock:
            runtime, users = self._entries.get(key) or (Runtime(key), 0)
            self._entries[key] = (runtime, users + 1)
            return runtime

    def release(self, runtime: Runtime) -> None:
        with self._lock:
            for key, (known, users) in list(self._entries.items()):
                if known is runtime:
                    if users > 1:
                        self._entries[key] = (known, users - 1)
                        return
                    del self._entries[key]
                    break
            else:
                return
        runtime.close()


_RUNTIMES = SharedRuntimes()


def acquire_runtime(images_dir: Path) -> Runtime:
    """The runtime every user over `images_dir` in this process shares (made by the first).

    The gym envs made without a `runtime` use it, and so may anything else that runs episodes in this
    process (training's in-process backend): one `Runtime` per process, whoever asks. Pair each call
    with `release_runtime`.
    """
    return _RUNTIMES.acquire(images_dir)


def release_runtime(runtime: Runtime) -> None:
    """Let go of a runtime from `acquire_runtime`; the last user's release closes it."""
    _RUNTIMES.release(runtime)


class EnterpriseHPCEnv(gymnasium.Env[str, str]):
    """A small Rocky Linux Slurm cluster in trouble; the agent types shell commands to fix it.

    Each reset hands over a fresh, isolated cluster (a login node and four compute nodes) with one
    incident set up by the chosen scenario. Each step types one command line into the agent's shell
    and returns what the terminal showed.

    Example:
        >>> import gymnasium, hpcgym  # doctest: +SKIP
        >>> env = gymnasium.make("EnterpriseHPC-v0", scenarios=["explore"], max_steps=20)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step("sinfo")
        >>> env.close()

    Args:
        scenarios: scenario ids to draw from at reset (default: every registered scenario).
        max_steps: the step budget (default: the scenario's own); reaching it truncates.
        images_dir: the built images (default `$HPCGYM_IMAGES` or `build/images`), used when no
            `runtime` is given.
        runtime: the runtime to use (not closed by `close`); default: the one every env in this
            process over `images_dir` shares, closed with the last of them.
        pool_size: how many ready episodes to keep, so that a reset is a hand-off.
        step_seconds: virtual seconds per step.
        timeout_s: wall-clock limit per command (the agent sees a timeout, not an error).
        registry: scenario id -> task factory (default: `default_registry()`).
        render_mode: None or "ansi".

    Observation:
        At reset, the alert then the first prompt; after a step, the command's output (stdout and
        stderr interleaved, at most `max_output_bytes` kept, head and tail).

    Info:
        `hpcgym.scenarios.incident.Incident.info()`: `scenario`, `tier`, `seed`, `node` (where the
        shell now is), `step`, `max_steps`, `now_s` (virtual time), `outcome`, `solved`, `failed`,
        `unsafe`, `reward_components` and `return`; after a step also `command_node`, `exit_code`,
        `timed_out`, `output_truncated`, `ended` (the login shell exited) and `step_unsafe`.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012 - gymnasium's own convention

    def __init__(
        self,
        scenarios: Sequence[str] | None = None,
        max_steps: int | None = None,
        *,
        images_dir: Path | str | None = None,
        runtime: Runtime | None = None,
        pool_size: int = 1,
        step_seconds: int = DEFAULT_STEP_SECONDS,
        timeout_s: float | None = None,
        registry: TaskRegistry | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', not {render_mode!r}")
        self.render_mode = render_mode
        self._shares_runtime = runtime is None
        images = Path(images_dir) if images_dir is not None else default_images_dir()
        self.runtime = runtime or acquire_runtime(images)
        self.pool: EpisodePool | None = None
        try:
            max_chars = self.runtime.config.max_output_bytes + 256  # head, tail and the cut/timeout notes
            self.observation_space = TerminalText(max_chars)
            self.action_space = ShellCommand(max_chars)
            self.pool = EpisodePool(
                self.runtime, pool_size, EpisodeOptions(step_seconds=step_seconds, timeout_s=timeout_s)
            )
            self.session = TaskSession(
                self.pool, registry or default_registry(), scenarios, max_steps, max_chars
            )
        except BaseException:
            self.close()
            raise
        self._transcript: list[str] = []

    # --- gymnasium's API ------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start a new episode on a fresh cluster.

        Args:
            seed: the episode's seed, as `invoke eval --seeds` and `hpcgym exec --seed` take it (train
                0-799, test 800-999); `info["seed"]` reports it. It picks the scenario unless
                `options` names one; the scenario derives its variant and clock from it. None: a
                seed drawn from the train range with the env's `np_random`.
            options: `{"scenario": ID}` picks the scenario instead of drawing one;
                `{"difficulty": {"red_herrings": 1, "chained": 0, "clue": "deep"}}` (or the text
                `"red_herrings=1,clue=deep"`) plays it harder or easier (hpcgym.scenarios.difficulty).

        Returns:
            The alert followed by the first prompt, and `info`.
        """
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"scenario", "difficulty"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; use 'scenario' and 'difficulty'")
        episode_seed = seed if seed is not None else draw_seed(self.np_random)
        start = self.session.reset(
            episode_seed, options.get("scenario"), difficulty=options.get("difficulty")
        )
        self._transcript = [start.observation]
        return start.observation, start.info

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """Type `action` as one command line at the prompt and return what the terminal showed.

        A failing or timed-out command is an observation (see `info`); only a broken cluster raises.

        Returns:
            observation, reward, terminated (solved, failed, or the login shell exited), truncated
            (the step budget ran out first), info.
        """
        step = self.session.step(action)
        self._transcript.append(f"{action}\n{step.observation}")
        if not step.info["ended"]:
            self._transcript.append(prompt(step.info["node"], step.info.get("user", "root")))
        return step.observation, step.reward, step.terminated, step.truncated, step.info

    def render(self) -> str | None:
        """The episode so far as the terminal showed it (for render_mode "ansi")."""
        if self.render_mode != "ansi":
            return None
        return "".join(self._transcript)

    def close(self) -> None:
        """Close the current episode and the pool, and let go of the shared runtime (if it used one)."""
        pool = getattr(self, "pool", None)
        if pool is not None:
            if getattr(self, "session", None) is not None:
                self.session.discard_episode()
            pool.close()
            self.pool = None
        if getattr(self, "_shares_runtime", False):
            release_runtime(self.runtime)
            self._shares_runtime = False
        super().close()


__all__ = ["ENV_ID", "EnterpriseHPCEnv", "SharedRuntimes", "acquire_runtime", "release_runtime"]
