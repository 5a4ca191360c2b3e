"""WebUI glue shared by A1111, Forge and reForge: settings (normalised once), the accordion UI, the Settings
tab, infotext, X/Y/Z axes, the per-generation guard and host detection. Imports the core, never an adapter;
gradio and the host's `modules` are imported inside functions only."""
