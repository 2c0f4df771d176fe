"""Plain values and rules: API names, spec and token parsing, schedule, reasons, errors, bounds."""
