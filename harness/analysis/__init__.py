"""Reading results: metrics and paired comparisons, the HTML/CSV report, harvesting corrected answers."""
