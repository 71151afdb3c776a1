"""The serve service: approved adapters behind an OpenAI-compatible API, kept in sync with
the registry on every replica.

Each replica's reconciler (:mod:`deployments`) loads the registry's champions on its
backend — a vLLM server beside it (:mod:`vllm_server`) or the model in this process
(:mod:`in_process`) — and moves each objective's alias once its champion has loaded. The
gateway (:mod:`gateway`) checks a client's token, scope and rate, reads the request once
(:mod:`openai_request`) and routes the model name; :mod:`api` holds the admin routes
(deployments, rollback). See README.md.
"""
