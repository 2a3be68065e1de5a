"""The `mycelium` command: talks to the local daemon's control API, never to the mesh directly."""
