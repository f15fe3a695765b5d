"""twinloop.infer: generation engines (vLLM offline, a vLLM server client, transformers ``generate``) behind the
Engine contract of ``twinloop.contracts``, the search procedures (``twinloop.infer.search``), and `twinloop
eval`'s running, resuming (``evaluate``) and reporting (``report``)."""
