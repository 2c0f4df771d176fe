"""Static checks of what gets installed: the image recipe, the manifests and their security posture."""
