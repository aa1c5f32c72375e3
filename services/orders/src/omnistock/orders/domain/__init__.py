"""The pure order domain: state + event → state."""
