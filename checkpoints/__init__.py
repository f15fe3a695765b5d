"""twinloop.checkpoints: reward bundles in Hugging Face form (``export``: write and load them; ``spec``: the one
``twinloop_reward.json`` format; ``card``: model cards; ``manifest``: sha256 of every file; ``serve``: a
loopback HTTP server), and the small models shipped for the CPU quickstart (``tiny-arith-policy/``)."""
