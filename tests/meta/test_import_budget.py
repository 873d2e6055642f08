"""What `goniec serve` imports, where: the parent stays small, the workers load only what they use.

Every worker is forked from the parent and starts with a copy of its memory,
so whatever the parent imports is paid once per process. The parent binds,
recovers the spool, forks and restarts: the serving stack (`goniec.worker`:
sessions, policy, DNS, mail authentication, delivery, admin services) is
imported after the fork. A worker other than 0 serves no web manager, and
mail authentication libraries load only when [mailauth] asks for them. The
check runs the real start-up in a fresh interpreter, up to the fork, then
runs worker 1's start-up in the same process and stops it at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from goniec.testing.process import free_port, to_toml

# Only for the CLI's tables and progress bars, the manager, saving settings, log
# rotation, and the first-start certificate (made by a short-lived child).
NEVER_IN_PARENT = ("rich", "dns", "spf", "dkim", "authres", "jinja2", "starlette", "uvicorn",
                   "tomlkit", "argon2", "cryptography", "concurrent_log_handler",
                   "goniec.worker", "goniec.server.session", "goniec.server.context",
                   "goniec.policy.transaction", "goniec.delivery", "goniec.mailauth",
                   "goniec.admin.service", "goniec.admin.runtime")
NEVER_IN_WORKER_1 = ("rich", "spf", "dkim", "authres", "jinja2", "starlette", "uvicorn",
                     "tomlkit", "cryptography", "concurrent_log_handler", "goniec.admin.web")

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys

    from goniec.server import supervisor

    seen = {}

    def run(self, workers):
        seen["parent"] = sorted(sys.modules)
        import goniec.admin.runtime as runtime

        started = runtime.start_services

        async def start_then_stop(*args, **kwargs):
            services = await started(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)  # the worker's own handler: a clean stop
            return services

        runtime.start_services = start_then_stop
        self.counter.worker = 1
        self.run_worker(self.config, 1)  # what the forked worker 1 does, without the fork
        seen["worker"] = sorted(sys.modules)

    supervisor.Supervisor.run = run
    from goniec.cli.main import main

    sys.argv = ["goniec", "serve", "-c", sys.argv[1]]
    try:
        main()
    finally:
        print(json.dumps(seen))
""")


def _loaded(names: list[str], banned: tuple[str, ...]) -> set[str]:
    return {n for n in names for b in banned if n == b or n.startswith(b + ".")}


def test_serve_imports_the_serving_stack_only_after_the_fork(tmp_path: Path) -> None:
    config = tmp_path / "goniec.toml"
    config.write_text(to_toml({
        "server": {"hostname": "mx.goniec.test", "data_dir": str(tmp_path / "data"),
                   "workers": 2, "log_level": "warning"},
        "domains": {"local": ["goniec.test"]},
        "dns": {"nameservers": ["127.0.0.1"], "port": free_port(), "timeout": 1},
        # Configured, so that it is worker 1's index that keeps it out.
        "admin": {"web_listen": f"127.0.0.1:{free_port()}"},
        "listeners": [{"name": "smtp", "address": f"127.0.0.1:{free_port()}"}],
    }))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(config)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert not _loaded(seen["parent"], NEVER_IN_PARENT), "imported before the fork"
    assert "goniec.server.listener" in seen["worker"]  # worker 1 did start
    assert not _loaded(seen["worker"], NEVER_IN_WORKER_1), "imported by worker 1"
