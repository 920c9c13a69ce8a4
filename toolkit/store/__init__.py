"""The adapter store: folders written atomically, their manifests, verified loading, import, model cards."""
