"""The city data bus: departments publish typed events once; the bus carries each event
to every department entitled to it, in the form that department may see."""

__version__ = "0.1.0"
