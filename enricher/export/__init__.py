"""Export stage: sinks that deliver stamped spans downstream."""
