"""No bare OSError escapes the driver API: ``Driver.__init_subclass__``
(driver.py) wraps every contract method of every driver, derived from the
contract itself.

``os_errors_as_driver_errors`` is what drivers were decorated with before
that; it adds nothing now and goes when the drivers drop the decorator.
"""


def os_errors_as_driver_errors(cls):
    return cls
