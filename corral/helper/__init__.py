"""The privileged helper (SPEC 2.2): the only part of corral's multi-tenant set-up that runs
as root. It serves a fixed list of requests (`corral.protocol.helper.HelperVerb`) on a unix
socket only the panel's uid may use: create a tenant (a system user and its home), start or
stop that tenant's daemon as that user, remove a tenant. Nothing else, and no shell.

Modules: `cli` (the command line and start-up checks), `config` (the checked settings),
`server` (socket, peer check, framing), `service` (the verbs), `accounts` (useradd and
friends), `homes` (tenant homes on disk), `daemons` (tenant daemons), `reach` (talking to a
tenant's socket without following anything the tenant controls), `procs` (killing a uid's
processes through pidfds), `registry` (the tenants the helper created), `audit`.
"""
