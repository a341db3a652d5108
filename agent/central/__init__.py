"""Central's tools: the batch verifier, the command sender, the enrolled-gateway list, the enroll server."""
