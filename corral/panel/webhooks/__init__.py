"""Deploy webhooks (SPEC 4): per-app tokens, the public `POST /hooks/deploy/{hook_id}`.

- `cipher.py`: the panel's webhook key file and the sealed copy of each token;
- `limiter.py`: the per-hook and per-address rate limits, the GitHub replay memory;
- `verify.py`: the three request formats (generic, GitHub, GitLab), pure functions;
- `service.py`: enable, rotate, disable, `webhook_view`, and checking a delivery;
- `endpoint.py`: the public endpoint itself (outside the session-based route table);
- `logs.py`: keeps query strings of hook URLs out of uvicorn's access log.
"""
