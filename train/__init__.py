"""twinloop.train: one config dataclass plus one trainer per method on TRL/transformers/peft/accelerate/DeepSpeed
(``gppo``, ``orm``, ``prm``, ``selfeval``), pure loss functions (``losses``), the helpers every trainer shares
(``common``) and atomic checkpoints that resume after a kill (``checkpointing``)."""
