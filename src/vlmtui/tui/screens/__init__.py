"""Modal screens: help, dispatch (recipes → devices), confirmations."""
