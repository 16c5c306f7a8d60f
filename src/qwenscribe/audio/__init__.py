"""Audio in: decoding media to 16 kHz mono, log-mel features, voice activity detection."""
