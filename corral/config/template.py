"""The commented example config that `corral init` writes."""

from __future__ import annotations

EXAMPLE_YAML = """\
# corral.yaml: the apps corral runs. Start them with `corral start corral.yaml`
# (or `corral start corral.yaml --only api`). PM2 ecosystem keys work here too.
#
# Durations: 500ms, 5s, 2m, 1h (a bare number is milliseconds, as in PM2).
# Sizes: 512K, 200M, 1G (binary units; a bare number is bytes).

apps:
  - name: api                   # letters, digits and . _ : -  (default: the script's name)
    script: app.py              # a file (relative to cwd), a program on PATH, or a command
    args: ["--port", "8000"]    # or one string: "--port 8000"
    # interpreter: python3      # default: from the extension (.py python3, .js node, ...)
    # cwd: .                    # default: this file's folder
    instances: 1                # a number, "max" (one per CPU) or -1 (CPUs minus one)
    # exec_mode: cluster        # with `listen`, instances share the daemon's sockets
    # listen: ["127.0.0.1:8000"]

    # Environment: `env` always, then env_<name> on `corral start --env <name>`.
    env:
      PYTHONUNBUFFERED: "1"
    env_production:
      APP_ENV: production
    # Secrets: names only, never values. Set each with `corral secret set api NAME`;
    # they are stored encrypted and reach the app last, at exec time.
    # secrets: [DATABASE_PASSWORD]

    # Restart policy.
    autorestart: true           # restart when it exits
    max_restarts: 16            # crashes within min_uptime before the app is errored
    min_uptime: 1s              # running less than this counts as a crash
    restart_delay: 0s           # wait before each restart
    # exp_backoff_restart_delay: 100ms   # instead: x1.5 per crash, up to 15s
    # stop_exit_codes: [0]      # exit codes that are not restarted
    # max_memory_restart: 300M  # restart above this RSS (whole process tree)
    # cron_restart: "0 3 * * *" # restart every day at 03:00

    # Restart when files change.
    watch: false                # true watches cwd; or a path, or a list of paths
    ignore_watch: ["*.log", ".git", "__pycache__"]
    # watch_delay: 1s

    # Stopping: kill_signal, then SIGKILL after kill_timeout.
    kill_signal: SIGINT
    kill_timeout: 1600ms

    # Logs: logs/<name>-out.log and -err.log in the corral home (~/.corral) unless set.
    # out_file: logs/api.out.log
    # error_file: logs/api.err.log
    # merge_logs: true          # one file for all instances
    # time: true                # prefix lines with a timestamp

    # As root only: run as another user, with limits.
    # user: www-data
    # group: www-data
    # rlimits: {nofile: 4096, as: 1G}
    # umask: "022"
"""
