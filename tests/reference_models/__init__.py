"""Reference implementations for rnnreg.testing's checks: correct ones in other styles, and planted bugs."""
