/// The product of non-negative factors, or nil when a factor is negative or the product
/// overflows: sizes computed from untrusted parameters and file headers before anything is
/// allocated.
package func checkedProduct(_ factors: [Int]) -> Int? {
    var product = 1
    for f in factors {
        guard f >= 0 else { return nil }
        let (r, overflow) = product.multipliedReportingOverflow(by: f)
        if overflow { return nil }
        product = r
    }
    return product
}

/// `a × b × ...`: ``checkedProduct(_:)`` of the arguments.
package func checkedProduct(_ factors: Int...) -> Int? { checkedProduct(factors) }
