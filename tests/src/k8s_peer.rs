//! The Kubernetes API emulator (`tests/peers/k8s_api_emulator.py`) as a test peer.
