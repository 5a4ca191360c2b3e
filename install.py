"""Upsample guidance needs nothing beyond what the WebUI already has (torch, numpy, gradio): this installer
deliberately installs nothing. It exists so that the WebUI's extension installer has a no-op to run."""
