"""The web console in a real browser (headless Chromium through Selenium): tests marked browser."""
