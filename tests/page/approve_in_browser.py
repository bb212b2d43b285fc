#!/usr/bin/env python3
"""Drives the status page in a real headless Chromium (Debian's chromium and
chromium-driver, through python3-selenium): loads it against a running
`spool serve`, waits for the pipeline and the job list to fill, opens the job
awaiting approval, clicks Approve, waits for the page to show the job moving
on, and saves a screenshot. Prints what it saw; exits non-zero on any
failure, naming it.

usage: approve_in_browser.py URL JOB_ID SCREENSHOT.png
"""
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


def main():
    url, job, shot = sys.argv[1], sys.argv[2], sys.argv[3]
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(url)
        # The pipeline table fills from /api/v2/status.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#stages tbody tr")) > 0)
        stages = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#stages tbody tr")]
        print("stages:", stages)
        row = wait.until(ec.element_to_be_clickable((By.ID, "job-" + job)))
        print("job row:", row.text)
        if "awaiting_approval" not in row.text:
            raise SystemExit("job %s is not shown awaiting approval: %r" % (job, row.text))
        row.click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "detail-title"), "#" + job))
        wait.until(ec.visibility_of_element_located((By.ID, "review")))
        driver.find_element(By.ID, "approve").click()
        # The page follows the job (a long poll) as it leaves the gate.
        wait.until(lambda d: d.find_element(By.ID, "detail-state").text
                   in ("running", "completed"))
        print("after approve:", driver.find_element(By.ID, "detail-state").text)
        wait.until(lambda d: d.find_element(By.ID, "detail-state").text == "completed")
        print("then:", driver.find_element(By.ID, "detail-state").text)
        driver.save_screenshot(shot)
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        if errors:
            raise SystemExit("the page logged errors: %r" % errors)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
