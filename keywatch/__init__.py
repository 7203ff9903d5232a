"""keywatch: streaming detection of stolen LLM API keys and cost spikes."""
__version__ = "0.1.0"
