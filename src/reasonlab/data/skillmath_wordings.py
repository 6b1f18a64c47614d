"""More SkillMath wordings: templates 3 and up of every skill, with names, objects and containers
drawn from lists.

A model that saw four wordings of a skill cannot be expected to read a fifth (DESIGN.md,
SkillMath); these templates give every skill nine scenarios of two wording variants each, so
that reading an unseen wording can be learned and measured. Templates 0–2 stay in :mod:`reasonlab.data.skillmath` unchanged: the default
configuration keeps using only them and generates the same problems as before.

Each entry is ``(ref, variant 0, variant 1)``: ``ref`` names the chained input in a multi-step
problem ("that" or "that many"). Besides a skill's own slots (``{x}``, ``{b}``, ...), a wording
may use the fill slots in :data:`FILLS` (``{name}``, ``{name2}``, ``{obj}``, ``{box}``), drawn
per step when the template is chosen.
"""

from __future__ import annotations

FILLS: dict[str, tuple[str, ...]] = {
    "name": ("Ann", "Ben", "Cal", "Dee", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jo", "Kim", "Leo",
             "Mia", "Ned", "Ola", "Pat"),
    "name2": ("Ray", "Sue", "Ted", "Uma", "Vic", "Wes", "Xia", "Yan", "Zoe", "Abe", "Bea", "Cy"),
    "obj": ("apples", "pens", "cards", "shells", "stamps", "beads", "rocks", "cups", "books",
            "coins", "eggs", "toys", "marbles", "plums", "socks", "nuts"),
    "box": ("bag", "jar", "crate", "basket", "tray", "tin", "sack", "bowl"),
}

_ = "that"
M = "that many"

WORDINGS: dict[str, list[tuple[str, str, str]]] = {
    "add": [
        (M, "{name} has {x} {obj}. {name} finds {b} more. How many {obj} now?",
            "{name} had {x} {obj} and then got {b} more. How many {obj} in all?"),
        (M, "A {box} holds {x} {obj}. {name} puts in {b} more. How many are in it?",
            "{name} adds {b} {obj} to a {box} of {x}. How many are in the {box}?"),
        (_, "Add {b} to {x}.", "What do you get when you add {x} and {b}?"),
        (M, "{name} has {x} {obj} and {name2} has {b}. How many do they have together?",
            "{name2} has {b} {obj} and {name} has {x}. How many in total?"),
        (_, "What is the sum of {x} and {b}?", "Find the total of {x} and {b}."),
        (M, "{x} {obj} were sold in the morning and {b} after noon. How many were sold?",
            "After {x} {obj} in the morning, {b} more were sold. How many in all?"),
    ],
    "sub": [
        (M, "{name} has {x} {obj} and gives away {b}. How many are left?",
            "{name} had {x} {obj}. {name} gave {b} away. How many remain?"),
        (M, "A {box} has {x} {obj}. {name} takes out {b}. How many are still in it?",
            "{name} takes {b} {obj} from a {box} of {x}. How many stay in the {box}?"),
        (_, "Take {b} away from {x}.", "Subtract {b} from {x}."),
        (M, "{name} needs {x} {obj} and has {b}. How many more are needed?",
            "{name} has {b} {obj} but needs {x}. How many are missing?"),
        (_, "What is {x} less {b}?", "What is left when {b} is taken from {x}?"),
        (M, "There were {x} {obj}. {b} broke. How many are whole?",
            "Of {x} {obj}, {b} broke. How many did not break?"),
    ],
    "mul": [
        (M, "{name} has {b} {box}s with {x} {obj} in each. How many {obj}?",
            "Each of {name}'s {b} {box}s holds {x} {obj}. How many {obj} in all?"),
        (M, "One {box} holds {x} {obj}. How many {obj} do {b} {box}s hold?",
            "How many {obj} are in {b} {box}s of {x}?"),
        (_, "Multiply {x} by {b}.", "What is the product of {x} and {b}?"),
        (M, "{name} buys {b} packs of {x} {obj}. How many {obj} is that?",
            "{b} packs with {x} {obj} each are bought by {name}. How many {obj}?"),
        (_, "What is {b} times {x}?", "Find {b} groups of {x}."),
        (M, "{name} gets {x} {obj} a week. How many in {b} weeks?",
            "In {b} weeks, how many {obj} does {name} get at {x} a week?"),
    ],
    "div": [
        (M, "{name} shares {x} {obj} equally among {b} friends. How many does each get?",
            "{b} friends share {x} {obj} from {name} equally. How many each?"),
        (M, "{x} {obj} go into {box}s of {b}. How many {box}s are filled?",
            "How many {box}s of {b} can be filled with {x} {obj}?"),
        (_, "Divide {x} by {b}.", "What is {x} split into {b} equal parts?"),
        (M, "{name} packs {x} {obj} into {b} equal {box}s. How many go in each?",
            "{x} {obj} are put into {b} {box}s equally by {name}. How many in each?"),
        (_, "How many times does {b} go into {x}?", "What is the quotient of {x} and {b}?"),
        (M, "{x} {obj} are split evenly over {b} days. How many a day?",
            "Over {b} days {name} uses {x} {obj} evenly. How many per day?"),
    ],
    "rem": [
        (M, "{name} shares {x} {obj} equally among {b} friends. How many are left over?",
            "{b} friends share {x} {obj} equally. How many cannot be shared?"),
        (M, "{x} {obj} go into {box}s of {b}. How many {obj} are left out?",
            "Fill {box}s of {b} with {x} {obj}. How many {obj} are left?"),
        (_, "Find the remainder when {x} is divided by {b}.", "What is left after dividing {x} by {b}?"),
        (M, "{name} packs {x} {obj} in groups of {b}. How many are not in a group?",
            "How many of {name}'s {x} {obj} are left after making groups of {b}?"),
        (_, "What is {x} modulo {b}?", "Compute {x} mod {b}."),
        (M, "{x} {obj} are dealt to {b} players, the same to each. How many are left?",
            "Deal {x} {obj} to {b} players evenly. How many stay undealt?"),
    ],
    "pct": [
        (M, "{name} had {x} {obj} and lost {p}% of them. How many were lost?",
            "{p}% of {name}'s {x} {obj} were lost. How many is that?"),

        (M, "{name} has {x} {obj}. {p}% of them are red. How many are red?",
            "Of {name}'s {x} {obj}, {p}% are red. How many red {obj}?"),
        (_, "Compute {p}% of {x}.", "How much is {p} percent of {x}?"),
        (M, "A {box} holds {x} {obj} and {p}% are broken. How many are broken?",
            "{p}% of the {x} {obj} in a {box} are broken. How many is that?"),
        (M, "{name} sold {p}% of {x} {obj}. How many were sold?",
            "Of {x} {obj}, {name} sold {p}%. How many did {name} sell?"),
        (_, "Take {p}% of {x}.", "What number is {p}% of {x}?"),
    ],
    "conv": [
        (M, "A film lasts {x} {frm}. How long is it in {to}?",
            "How many {to} long is a {x} {frm} film?"),

        (M, "{name} walked for {x} {frm}. How many {to} is that?",
            "How many {to} did {name} walk in {x} {frm}?"),
        (_, "Change {x} {frm} into {to}.", "Express {x} {frm} in {to}."),
        (M, "A rope is {x} {frm} long. How long is it in {to}?",
            "What is the length in {to} of a {x} {frm} rope?"),
        (M, "{name} waited {x} {frm}. How many {to} did {name} wait?",
            "In {to}, how long is a wait of {x} {frm}?"),
        (_, "{x} {frm} equals how many {to}?", "Turn {x} {frm} into {to}."),
    ],
    "avg": [
        (_, "{name} bought {nums} {obj} on some trips. How many per trip on average?",
         "On some trips {name} got {nums} {obj}. Find the mean per trip."),

        (_, "{name} scored {nums} points. What is the mean score?",
         "The points {name} scored were {nums}. Find the average."),
        (_, "Find the average of the numbers {nums}.", "What is the mean of {nums}?"),
        (_, "Some {box}s hold {nums} {obj}. What is the average per {box}?",
         "{box}s with {nums} {obj}: what is the mean number?"),
        (_, "{name} ran {nums} km on some days. What is the average a day?",
         "On some days {name} ran {nums} km. Find the daily mean."),
        (_, "Average {nums}.", "Give the mean value of {nums}."),
    ],
    "cmp": [
        (M, "{name} has {x} {obj} and {name2} has {b}. How many more does one have?",
            "{name2} has {b} {obj}, {name} has {x}. What is the difference?"),
        (_, "How much bigger is the larger of {x} and {b}?", "Find the gap between {x} and {b}."),
        (M, "One {box} has {x} {obj}, another has {b}. What is the difference?",
            "Two {box}s hold {x} and {b} {obj}. By how many do they differ?"),
        (_, "{name} scored {x} and {name2} scored {b}. By how many did one win?",
         "The scores of {name} and {name2} were {x} and {b}. What is the margin?"),
        (_, "What is the distance between {x} and {b} on a number line?",
         "How many steps apart are {x} and {b}?"),
        (M, "{name} read {x} pages and {name2} read {b}. How many more pages did one read?",
            "{name2} read {b} pages and {name} read {x}. What is the difference?"),
    ],
    "rate": [
        (M, "{name} reads {x} pages an hour. How many pages in {t} hours?",
            "Reading {x} pages an hour, how many pages does {name} read in {t} hours?"),

        (M, "{name} makes {x} {obj} an hour. How many in {t} hours?",
            "At {x} {obj} an hour, how many does {name} make in {t} hours?"),
        (M, "A bike goes {x} km an hour. How far in {t} hours?",
            "How many km does a bike at {x} km an hour go in {t} hours?"),
        (M, "{name} saves {x} dollars a week. How much in {t} weeks?",
            "Saving {x} dollars a week, how much does {name} have after {t} weeks?"),
        (M, "A tap fills {x} cups a minute. How many cups in {t} minutes?",
            "In {t} minutes, how many cups does a tap filling {x} a minute fill?"),
        (M, "{name} packs {x} {obj} a day. How many in {t} days?",
            "Packing {x} {obj} a day, how many does {name} pack in {t} days?"),
    ],
    "lin": [
        (M, "{name} had {x} {obj}, kept {b} and gave the rest to {a} friends equally. How many did each get?",
            "{a} friends share what is left of {x} {obj} after {name} keeps {b}. How many each?"),

        (_, "Find n if {a}n + {b} = {x}.", "What n makes {a}n + {b} equal {x}?"),
        (M, "{name} has {a} full {box}s and {b} loose {obj}, {x} {obj} in all. How many are in a {box}?",
            "{x} {obj} are {a} equal {box}s and {b} more. How many in one {box}?"),
        (M, "{name} pays {x} dollars for {a} {obj} and a {b} dollar {box}. What is one of the {obj}?",
            "{a} {obj} and a {b} dollar {box} cost {x} dollars. Find the price of one."),
        (_, "{a} times a number plus {b} is {x}. What is the number?",
         "A number times {a}, plus {b}, gives {x}. Find it."),
        (M, "{name} walked {x} km: {a} equal trips and {b} km more. How long is a trip?",
            "{a} equal trips and {b} km more make {x} km. How long is one trip?"),
    ],
    "area": [
        (M, "A box lid is {x} cm by {w} cm. What is its area?",
            "What is the area of a {x} cm by {w} cm lid?"),

        (M, "A {x} by {w} rug. What is its area?", "What is the area of a rug {x} by {w}?"),
        (M, "{name}'s yard is {x} m long and {w} m wide. What is its area?",
            "What is the area of a yard {x} m by {w} m?"),
        (M, "A wall is {x} tiles wide and {w} tiles high. How many tiles?",
            "How many tiles cover a wall {x} wide and {w} high?"),
        (_, "Multiply the length {x} by the width {w} to get the area.",
         "Length {x}, width {w}: what is the area?"),
        (M, "A tray has {x} rows of {w} {obj}. How many {obj}?",
            "How many {obj} fill {x} rows of {w}?"),
    ],
    "perim": [
        (M, "{name} puts tape around a {x} by {w} table. How much tape?",
            "How much tape goes around a table {x} by {w}?"),

        (M, "A rug is {x} by {w}. What is its perimeter?",
            "What is the perimeter of a {x} by {w} rug?"),
        (M, "{name} walks around a {x} m by {w} m yard. How far is that?",
            "How many meters is one walk around a yard {x} m by {w} m?"),
        (_, "Length {x}, width {w}: what is the perimeter?",
         "Find the distance around a {x} by {w} rectangle."),
        (M, "A {x} cm by {w} cm card gets a ribbon around it. How long is the ribbon?",
            "How long is a ribbon around a card {x} cm by {w} cm?"),
        (M, "A pen is {x} m long and {w} m wide. How much fence does it need?",
            "How much fence goes round a pen {x} m by {w} m?"),
    ],
}
