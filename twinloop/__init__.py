"""twinloop: training-and-inference co-design for LLM reasoning; one Reward object for trainers and search.

Packages, in layer order (each imports only those before it): ``twinloop.contracts`` (the Engine protocol and
its request/result types), ``twinloop.rewards`` (every reward), ``twinloop.tasks`` (task loaders with their
verifiable rewards), ``twinloop.infer`` (engines and search procedures), ``twinloop.checkpoints`` (reward
bundles: export, load, serve), ``twinloop.build`` (specs -> objects), ``twinloop.train`` (trainers), and the CLI
(``twinloop.cli`` and the command modules beside it).
"""
