"""Two ways to run the same reading, twin rule and encoding: threads in this process, or Ray Data."""
