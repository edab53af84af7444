"""Data curation: the stages that turn raw image-text pairs into curated WebDataset shards.

Each stage is a function over dataset folders (``ingest``, ``dedup``, ``filter_images``, ``crop``,
``caption``, ``synthesize``, ``curate``, ``shard``) and a command ``edgefusion data STAGE``. A
dataset folder is an HF ``imagefolder``: image files plus ``metadata.jsonl``; every stage adds
``rejects.jsonl`` (what it removed and why) and ``stats.json``, so nothing disappears unrecorded.
"""
