"""The `corral` command line: parses arguments, talks to the daemon over the control socket."""
