"""The model being fine-tuned: a 2-label sequence classifier, and a checksum of its weights."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

ID2LABEL = {0: "negative", 1: "positive"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}

#: Config attributes that hold a dropout probability, across the encoders we fine-tune
#: (BERT/MiniLM: hidden, attention, head; DistilBERT: dropout, attention, head).
DROPOUT_ATTRS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "dropout",
    "attention_dropout",
    "seq_classif_dropout",
)


def load_model(name_or_path: str, dropout: float | None = None) -> Any:
    """A 2-label sequence classifier; ``dropout`` (if set) replaces every dropout rate."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(
        name_or_path, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID
    )
    if dropout is not None:
        for attr in DROPOUT_ATTRS:
            if hasattr(config, attr):
                setattr(config, attr, dropout)
    return AutoModelForSequenceClassification.from_pretrained(
        name_or_path, config=config, dtype=torch.float32
    )


def param_checksum(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer: equal across ranks iff DDP kept them in sync."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
