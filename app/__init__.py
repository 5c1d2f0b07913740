"""PolypScope's desktop app and command line (runs without torch)."""
