"""The tunewire test suite."""
