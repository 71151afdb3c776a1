"""What every tunewire process needs first: errors, settings, logs, metrics, the S3 store.

The lowest layer of the core: it imports nothing else of tunewire.
"""
