"""The Azure edges every engine uses: Table/Blob storage, Event Hubs in and out, ARM, the dead-letter store.

`wiring` builds each process-wide client once from the app settings.
"""
