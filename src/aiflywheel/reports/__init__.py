"""What every HTML report shares: charts (inline SVG) and number formatting."""
