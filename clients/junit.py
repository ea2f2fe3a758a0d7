"""JUnit XML for CI: one <testsuite> per suite file, one <testcase> per case; an unexpected verdict
or a regression is a <failure> carrying the report's text, a case that could not be checked (a
rejected request, an unreachable server) an <error>."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .suite import Outcome

# What XML 1.0 cannot hold, even escaped (its Char production): C0 controls but tab, newline and
# carriage return, surrogates, U+FFFE and U+FFFF. ElementTree writes them as they are, and the file
# then does not parse: a CI job that publishes the report fails, or shows nothing.
XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """text with what XML cannot hold written as a visible escape (\\x01, \\ufffe), so that a
    report quoting program text, a server's message or a file's path always parses."""
    return XML_ILLEGAL.sub(lambda m: ascii(m.group())[1:-1], text)


def _suite_element(name: str, file: str, outcomes: Sequence[Outcome]) -> ET.Element:
    failures = sum(1 for o in outcomes if o.error is None and not o.ok)
    errors = sum(1 for o in outcomes if o.error is not None)
    seconds = sum(o.seconds for o in outcomes)
    suite = ET.Element(
        "testsuite",
        name=name,
        file=file,
        tests=str(len(outcomes)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{seconds:.3f}",
    )
    for o in outcomes:
        case = ET.SubElement(
            suite, "testcase", classname=name, name=o.case.name, file=file, time=f"{o.seconds:.3f}"
        )
        if o.case.line:
            case.set("line", str(o.case.line))
        if o.error is not None:
            ET.SubElement(case, "error", message=o.error, type="CheckError").text = o.error
        elif not o.ok:
            kind = "UnexpectedVerdict" if not o.verdict_ok else "Regression"
            ET.SubElement(case, "failure", message=o.headline, type=kind).text = o.details()
        if o.result is not None:
            ET.SubElement(case, "system-out").text = o.result.summary
    return suite


def write_error(path: str | Path, message: str) -> None:
    """A run that could not check anything (bad suite, unreachable server, refused token): one
    errored testcase, so that a CI job that publishes the report still shows why."""
    root = ET.Element("testsuites", name="crossgrad", tests="1", failures="0", errors="1")
    suite = ET.SubElement(root, "testsuite", name="crossgrad check", tests="1", failures="0", errors="1")
    case = ET.SubElement(suite, "testcase", classname="crossgrad check", name="the run")
    ET.SubElement(case, "error", message=message, type="RunError").text = message
    _save(root, path)


def write(path: str | Path, outcomes: Sequence[Outcome]) -> None:
    """Write the report; suites keep the order in which they were given."""
    by_suite: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        by_suite.setdefault((o.case.suite, str(o.case.path)), []).append(o)
    root = ET.Element(
        "testsuites",
        name="crossgrad",
        tests=str(len(outcomes)),
        failures=str(sum(1 for o in outcomes if o.error is None and not o.ok)),
        errors=str(sum(1 for o in outcomes if o.error is not None)),
        time=f"{sum(o.seconds for o in outcomes):.3f}",
    )
    for (name, file), group in by_suite.items():
        root.append(_suite_element(name, file, group))
    _save(root, path)


def _save(root: ET.Element, path: str | Path) -> None:
    # every text and attribute, whatever it came from: names are checked when a suite is loaded,
    # but messages and reports quote programs, servers and paths that nothing checked
    for element in root.iter():
        element.text = None if element.text is None else xml_text(element.text)
        element.tail = None if element.tail is None else xml_text(element.tail)
        for key, value in element.attrib.items():
            element.set(key, xml_text(value))
    tree = ET.ElementTree(root)
    ET.indent(tree)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
