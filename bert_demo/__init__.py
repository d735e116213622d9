"""The main job of the repository: one small BERT trained in PyTorch and in Flax NNX side by side.

Not part of the ``optax_bertadam`` wheel: it is a folder of the repository, run from its root as
``python -m bert_demo demo`` (or ``bash run_demo.sh``), and it may import what the library must
not (torch, ``torch_ref``, flax, matplotlib, ``parity_tests``).

- ``bert_demo.cli``: the ``demo``, ``schedules`` and ``parity`` commands.
- ``bert_demo.bing_bert``: ``demo --recipe bing_bert_lamb``, DeepSpeedExamples' bing_bert LAMB
  recipe on a DeepSpeed engine vs ``optax_bertadam.bing_bert_lamb``.
- ``bert_demo.models``: the Flax NNX BERT and its converter from a PyTorch ``state_dict``.
- ``bert_demo.text_data``: the shipped corpus (``bert_demo/data/corpus.txt``), a word
  tokenizer and seeded masked-LM batches.
"""
